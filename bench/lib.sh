# shellcheck shell=bash
# Sourced by bench/api.sh and bench/compare.sh (which define `die` and set ROOT).

# Sets BIN (the airlock binary to benchmark) and BIN_SOURCE (how it was chosen):
# AIRLOCK_BIN=/path benchmarks that binary as it is (no build, no check); otherwise
# target/release/airlock, rebuilt with `cargo build --release --locked` when it is
# missing or older than src/, Cargo.toml or Cargo.lock.
airlock_binary() {
  if [[ -n ${AIRLOCK_BIN:-} ]]; then
    BIN=$AIRLOCK_BIN
    [[ -x $BIN ]] || die "AIRLOCK_BIN=$BIN is not an executable"
    BIN_SOURCE="prebuilt $BIN"
    return
  fi
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock"
  if [[ ! -x $BIN ]] || [[ -n $(cd "$ROOT" && find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit) ]]; then
    echo "building release binary (cargo build --release --locked) ..." >&2
    (cd "$ROOT" && cargo build --release --locked) >&2 || die "cargo build --release --locked failed"
  fi
  [[ -x $BIN ]] || die "no binary at $BIN after the build"
  BIN_SOURCE="working tree"
}
