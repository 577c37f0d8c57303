#!/usr/bin/env bash
# Builds the fuzz targets once and runs each for a while (fuzz/README.md).
#   [FUZZ_SANITIZER=none] fuzz/run.sh [SECONDS [TARGET...]]   default: 25 s for each of the five
# Each run starts from the seeds and regression inputs (all replayed first) and writes what
# it discovers to fuzz/corpus/TARGET (not committed). A failing input is kept under
# fuzz/artifacts/TARGET and the script exits non-zero. Needs the nightly toolchain and
# cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-25}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(h1_response_framing h1_request_head placeholder_scan basic_percent_decode policy_parse)
fi
# 16 codegen units: a faster build for a slightly slower fuzzer. FUZZ_SANITIZER=none (what
# CI sets) builds without AddressSanitizer, which cuts the build further; the default is
# cargo-fuzz's (address).
build=(--codegen-units 16)
[ -n "${FUZZ_SANITIZER:-}" ] && build+=(--sanitizer "$FUZZ_SANITIZER")

dict_of() {
  case "$1" in
    h1_*) echo dicts/h1.dict ;;
    placeholder_scan) echo dicts/placeholder.dict ;;
    policy_parse) echo dicts/policy.dict ;;
    *) echo "" ;;
  esac
}

started=$(date +%s)
nice -n 10 cargo +nightly fuzz build "${build[@]}"
echo "fuzz: built in $(($(date +%s) - started)) s"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "regressions/$t" "artifacts/$t"
  dict="$(dict_of "$t")"
  log="$(mktemp)"
  flags=(-max_total_time="$seconds" -timeout=30 -print_final_stats=1)
  [ -n "$dict" ] && flags+=(-dict="$dict")
  if nice -n 10 cargo +nightly fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- "${flags[@]}" >"$log" 2>&1; then
    runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 || true)"
    echo "fuzz: $t: ${runs:-done} ($(ls "corpus/$t" | wc -l) corpus inputs)"
  else
    echo "fuzz: $t FAILED; the end of its log:"
    tail -60 "$log"
    failed+=("$t")
  fi
  rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets in $(($(date +%s) - started)) s, failing: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
