#!/bin/sh
# As the official nginx image's entrypoint: run /docker-entrypoint.d/*.sh, then nginx.
set -eu
for script in /docker-entrypoint.d/*.sh; do
  [ -x "$script" ] && "$script"
done
exec "$@"
