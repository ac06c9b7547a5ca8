#!/usr/bin/env bash
# Static checks of catdog's deployment files, offline once the tools are installed. One line per
# check (PASS / FAIL / SKIP), the tool's own output under a FAIL; exit status 1 when any failed.
#
#   deploy/lint.sh            every check
#   deploy/lint.sh --setup    only make (or refresh) the tools' venv, then exit
#
# The tools (deploy/requirements-lint.txt, whole closure pinned) live in their own venv,
# ~/.cache/catdog/lint-venv (under CATDOG_CACHE_DIR; CATDOG_LINT_VENV overrides it), made here from
# PyPI once per machine, not per clone, and again only when that file changes (a stamp holds its sha256). Not in .venv: checkov needs packaging<24, the
# project's requirements.lock pins packaging==26.4.
#
# Checks: kustomize build of every overlay (kubectl's built-in kustomize); kubernetes-validate
# --strict against the oldest and newest Kubernetes we support; checkov (kubernetes) on each
# build and checkov (dockerfile) on every Dockerfile, with deploy/k8s/.checkov.yaml; hadolint on
# every Dockerfile; check-jsonschema (compose-spec) on every compose file; yamllint; and
# `docker compose config -q` where a compose command is installed. Missing files are skipped.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
VENV=${CATDOG_LINT_VENV:-${CATDOG_CACHE_DIR:-$HOME/.cache/catdog}/lint-venv}
REQUIREMENTS=deploy/requirements-lint.txt
CHECKOV_CONFIG=deploy/k8s/.checkov.yaml
KUBE_VERSIONS=${CATDOG_KUBE_VERSIONS:-"1.30.0 1.37.0"}  # oldest supported, newest bundled schema
PYTHON=${PYTHON:-python3}

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
skip() { printf 'SKIP  %s (%s)\n' "$1" "$2"; }
fail() {  # fail NAME LOGFILE
  printf 'FAIL  %s\n' "$1"
  [ -s "${2:-}" ] && sed 's/^/      /' "$2"
  failures=$((failures + 1))
}
# run NAME COMMAND...: one line for the command's outcome, its output only when it failed
run() {
  local name=$1 log
  shift
  log=$(mktemp)
  if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name" "$log"; fi
  rm -f "$log"
}

ensure_venv() {
  local want
  want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [ -x "$VENV/bin/checkov" ] && [ "$(cat "$VENV/.requirements-sha256" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$VENV")"
  # keep the venv out of git wherever it is made inside the work tree
  case "$VENV" in "$ROOT"/.tools/*) printf '*\n' >"$ROOT/.tools/.gitignore" ;; esac
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$REQUIREMENTS" &&
    "$VENV/bin/pip" check -q --disable-pip-version-check >/dev/null &&
    echo "$want" >"$VENV/.requirements-sha256"
}

log=$(mktemp)
if ensure_venv >"$log" 2>&1; then
  pass "tools: $VENV from $REQUIREMENTS"
else
  fail "tools: could not make $VENV from $REQUIREMENTS" "$log"
  rm -f "$log"
  exit 1
fi
rm -f "$log"
[ "${1:-}" = "--setup" ] && exit 0
BIN=$VENV/bin

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# --- Kubernetes: build, schema, policy ------------------------------------------------------------
if ! command -v kubectl >/dev/null; then
  fail "kustomize: kubectl not found (its built-in kustomize renders the overlays)"
else
  for dir in deploy/k8s/overlays/*/; do
    overlay=$(basename "$dir")
    render=$OUT/$overlay.yaml
    log=$OUT/$overlay.log
    if kubectl kustomize "$dir" >"$render" 2>"$log"; then
      pass "kustomize build overlays/$overlay"
    else
      fail "kustomize build overlays/$overlay" "$log"
      continue
    fi
    for version in $KUBE_VERSIONS; do
      run "kubernetes-validate --strict -k $version overlays/$overlay" \
        "$BIN/kubernetes-validate" --strict --quiet -k "$version" "$render"
    done
    run "checkov kubernetes overlays/$overlay" \
      "$BIN/checkov" --skip-download --config-file "$CHECKOV_CONFIG" --framework kubernetes -f "$render"
  done
fi

# --- Dockerfiles ----------------------------------------------------------------------------------
mapfile -t dockerfiles < <(
  { ls Dockerfile* 2>/dev/null; find deploy/docker -name 'Dockerfile*' -type f 2>/dev/null; } |
    grep -v '\.dockerignore$' | sort -u
)
if [ ${#dockerfiles[@]} -eq 0 ]; then
  skip "checkov dockerfile" "no Dockerfile yet"
  skip "hadolint" "no Dockerfile yet"
else
  args=()
  for f in "${dockerfiles[@]}"; do args+=(-f "$f"); done
  run "checkov dockerfile (${#dockerfiles[@]} files)" \
    "$BIN/checkov" --skip-download --config-file "$CHECKOV_CONFIG" --framework dockerfile "${args[@]}"
  for f in "${dockerfiles[@]}"; do
    # warnings and errors fail; info and style are shown by `hadolint FILE` but do not fail
    run "hadolint $f" "$BIN/hadolint" --no-color --failure-threshold warning "$f"
  done
fi

# --- compose --------------------------------------------------------------------------------------
mapfile -t composefiles < <(ls compose.yaml deploy/docker/compose.*.yaml 2>/dev/null)
if [ ${#composefiles[@]} -eq 0 ]; then
  skip "check-jsonschema compose-spec" "no compose file yet"
else
  for f in "${composefiles[@]}"; do
    run "check-jsonschema compose-spec $f" \
      "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec "$f"
  done
fi

if [ ! -f compose.yaml ]; then
  skip "docker compose config" "no compose.yaml yet"
elif ! docker compose version >/dev/null 2>&1; then
  skip "docker compose config" "no \`docker compose\` command on this machine"
else
  run "docker compose config -q compose.yaml" docker compose -f compose.yaml config -q
  for f in deploy/docker/compose.*.yaml; do
    [ -f "$f" ] || continue
    run "docker compose config -q compose.yaml + $f" docker compose -f compose.yaml -f "$f" config -q
  done
fi

# --- YAML style -----------------------------------------------------------------------------------
yamlfiles=(deploy .yamllint.yaml)
for f in compose.yaml compose.*.yaml; do [ -f "$f" ] && yamlfiles+=("$f"); done
run "yamllint ${yamlfiles[*]}" "$BIN/yamllint" --config-file .yamllint.yaml "${yamlfiles[@]}"

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
