#!/bin/sh
# The ml-app replicas nginx sends to: every address Docker's DNS gives for the service whose
# GET /ready answers 200 (all of them while none is ready, so nginx can start and clients get the
# replicas' own 503 + Retry-After). Written to /tmp/catdog-upstream.conf now, then checked every
# CATDOG_UPSTREAM_POLL_SECONDS in the background; nginx reloads when the set changes.
# A replica joins after one good answer and leaves after CATDOG_UPSTREAM_FAILS bad ones in a row
# (a busy replica may answer /ready late) or at once when Docker's DNS no longer has it.
# Runs from the image's entrypoint (official nginx: /docker-entrypoint.d/; the offline image too).
set -eu
service=${CATDOG_UPSTREAM_SERVICE:-ml-app}
port=${CATDOG_UPSTREAM_PORT:-8000}
every=${CATDOG_UPSTREAM_POLL_SECONDS:-1}
fails_allowed=${CATDOG_UPSTREAM_FAILS:-3}
conf=/tmp/catdog-upstream.conf
state=/tmp/catdog-upstream.d
mkdir -p "$state"

servers() {
  all=$(getent ahostsv4 "$service" 2>/dev/null | awk '{print $1}' | sort -u)
  for ip in $all; do  # every replica at once: a busy one may take seconds
    ( if curl -fsS -o /dev/null -m 3 "http://$ip:$port/ready" 2>/dev/null; then echo 0; else echo 1; fi ) > "$state/$ip.now" &
  done
  wait
  ready=""
  for ip in $all; do
    fails=$(cat "$state/$ip.fails" 2>/dev/null || echo "$fails_allowed")
    if [ "$(cat "$state/$ip.now")" = 0 ]; then fails=0; else fails=$((fails + 1)); fi
    echo "$fails" > "$state/$ip.fails"
    if [ "$fails" -lt "$fails_allowed" ]; then ready="$ready $ip"; fi
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
