#!/usr/bin/env bash
# `make compose-down`: stop and remove every container, network and volume of the stack that
# `make compose-up` started (images stay, for a fast next start; dockerd keeps running:
# `make engine-stop` stops the one catdog started).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/docker/compose-env.sh
if ! timeout 10 docker info >/dev/null 2>&1; then
  echo "compose-down: no Docker engine answers; nothing to remove" >&2
  exit 0
fi
ensure_compose_plugin >/dev/null 2>&1 || true
mapfile -t files < <(saved_compose_files)
# compose reads the whole file: values that only `up` needs must still be set
CATDOG_ADMIN_TOKEN=${CATDOG_ADMIN_TOKEN:-unused} docker compose "${files[@]}" down --volumes --remove-orphans --timeout 40
label="label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"
left=$(docker ps -aq --filter "$label"; docker network ls -q --filter "$label"; docker volume ls -q --filter "$label")
if [ -n "$left" ]; then
  echo "compose-down: still there: $left" >&2
  exit 1
fi
rm -f "$COMPOSE_STATE/$COMPOSE_PROJECT_NAME.files"
echo "compose-down: no container, network or volume of the stack $COMPOSE_PROJECT_NAME is left" >&2
