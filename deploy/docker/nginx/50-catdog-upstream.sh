#!/bin/sh
# The ml-app replicas nginx sends to: every address Docker's DNS gives for the service whose
# GET /ready answers 200 (all of them while none is ready, so nginx can start and clients get the
# replicas' own 503 + Retry-After). Written to /tmp/catdog-upstream.conf now, then checked every
# CATDOG_UPSTREAM_POLL_SECONDS in the background; nginx reloads when the set changes.
# Runs from the image's entrypoint (official nginx: /docker-entrypoint.d/; the offline image too).
set -eu
service=${CATDOG_UPSTREAM_SERVICE:-ml-app}
port=${CATDOG_UPSTREAM_PORT:-8000}
every=${CATDOG_UPSTREAM_POLL_SECONDS:-1}
conf=/tmp/catdog-upstream.conf

servers() {
  all=$(getent ahostsv4 "$service" 2>/dev/null | awk '{print $1}' | sort -u)
  ready=""
  for ip in $all; do
    if curl -fsS -o /dev/null -m 1 "http://$ip:$port/ready" 2>/dev/null; then ready="$ready $ip"; fi
  done
  for ip in ${ready:-$all}; do echo "server $ip:$port max_fails=0;"; done
}

write() {  # $1: the server lines; nothing resolvable yet: a placeholder that fails fast (502)
  if [ -n "$1" ]; then printf '%s\n' "$1" > "$conf.new"; else echo "server 127.0.0.1:9 down;" > "$conf.new"; fi
  mv "$conf.new" "$conf"
}

known=$(servers)
write "$known"
echo "catdog-upstream: $(echo "$known" | grep -c server || true) replica(s) of $service" >&2
(
  while sleep "$every"; do
    now=$(servers)
    if [ -n "$now" ] && [ "$now" != "$known" ]; then
      write "$now"
      if nginx -s reload 2>/dev/null; then
        echo "catdog-upstream: now $(echo "$now" | awk '{print $2}' | tr '\n' ' ')" >&2
        known=$now
      fi
    fi
  done
) &
