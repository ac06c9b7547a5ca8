#!/usr/bin/env bash
# A Docker engine for `make compose-up` and the container tests: use the one that answers, else
# install Debian's docker.io and start dockerd here (no systemd needed), and stop only what we started.
#
#   engine.sh start   answer when `docker info` works; else install what is missing and start dockerd
#   engine.sh stop    stop the dockerd this script started (by its pid file) and remove its docker0 bridge
#   engine.sh status  say which engine answers and whether this script started it
#
# dockerd runs with default-ulimits nofile 1024:1024 and nproc 4096:4096: containers inherit them,
# and a machine whose hard nofile limit is low (20000 here) cannot start containers that ask for
# more. Its files: /var/lib/catdog-docker (images, volumes), /run/catdog-docker (exec root, pid file).
set -euo pipefail

ROOT=${CATDOG_DOCKER_ROOT:-/var/lib/catdog-docker}
RUN=${CATDOG_DOCKER_RUN:-/run/catdog-docker}
SOCK=/var/run/docker.sock
PIDFILE=$RUN/dockerd.pid
LOG=$RUN/dockerd.log
STARTED=$RUN/started-by-catdog

say() { echo "engine: $*" >&2; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_engine() {
  command -v dockerd >/dev/null && command -v docker >/dev/null && return 0
  say "installing Debian's docker.io (dockerd, containerd, runc)"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq docker.io >/dev/null
}

start() {
  if answers; then
    say "a Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  install_engine
  sudo_ mkdir -p "$ROOT" "$RUN"
  cat > "$RUN/daemon.json" <<JSON
{
  "data-root": "$ROOT",
  "exec-root": "$RUN/exec",
  "pidfile": "$PIDFILE",
  "hosts": ["unix://$SOCK"],
  "default-ulimits": {
    "nofile": {"Name": "nofile", "Hard": 1024, "Soft": 1024},
    "nproc": {"Name": "nproc", "Hard": 4096, "Soft": 4096}
  },
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"},
  "features": {"buildkit": true}
}
JSON
  say "starting dockerd (data root $ROOT, log $LOG)"
  # setsid: the engine outlives the make that started it; stop it with `engine.sh stop`
  sudo_ setsid dockerd --config-file "$RUN/daemon.json" >"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    if answers; then
      touch "$STARTED"
      say "dockerd answers (pid $(cat "$PIDFILE"))"
      return 0
    fi
    sleep 1
  done
  say "dockerd did not answer within 60 s; the end of its log:"
  tail -n 20 "$LOG" >&2 || true
  exit 1
}

stop() {
  if [ ! -f "$STARTED" ] || [ ! -f "$PIDFILE" ]; then
    say "no dockerd started by catdog is running; nothing to stop"
    return 0
  fi
  pid=$(cat "$PIDFILE")
  say "stopping dockerd (pid $pid)"
  sudo_ kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill -0 "$pid" 2>/dev/null && sudo_ kill -KILL "$pid" 2>/dev/null || true
  # dockerd leaves its bridge behind when it stops
  if ip link show docker0 >/dev/null 2>&1; then sudo_ ip link delete docker0 || true; fi
  sudo_ rm -f "$STARTED"
}

status() {
  if answers; then
    where=$([ -f "$STARTED" ] && echo "started by catdog, pid $(cat "$PIDFILE" 2>/dev/null)" || echo "not started by catdog")
    say "Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers ($where)"
  else
    say "no Docker engine answers"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
