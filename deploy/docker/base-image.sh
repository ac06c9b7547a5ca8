#!/usr/bin/env bash
# Prints the base image the catdog images build FROM, making it first when needed:
#   - python:3.11-slim-bookworm (the official image users everywhere use) when present or pullable;
#   - else catdog-base:bookworm, made here from the Debian mirror with mmdebstrap (Debian's
#     python3 is 3.11, so the project's wheels fit) and `docker import`: for machines and
#     air-gapped sites where no image registry answers.
# CATDOG_BASE_IMAGE set: printed as it is (nothing is pulled or made).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
OFFICIAL=python:3.11-slim-bookworm
LOCAL=catdog-base:bookworm
MIRROR=${CATDOG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${CATDOG_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

say() { echo "base-image: $*" >&2; }

if [ -n "${CATDOG_BASE_IMAGE:-}" ]; then echo "$CATDOG_BASE_IMAGE"; exit 0; fi
for image in "$OFFICIAL" "$LOCAL"; do
  if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi
done
if timeout 120 docker pull -q "$OFFICIAL" >/dev/null 2>&1; then echo "$OFFICIAL"; exit 0; fi

say "no registry answers for $OFFICIAL; making $LOCAL from the Debian mirror ($MIRROR)"
if ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
  --customize-hook="cp '$here/apt-docker-clean' \"\$1/etc/apt/apt.conf.d/docker-clean\"" \
  bookworm "$work/rootfs.tar" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main" >&2
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "Debian bookworm minbase + python3 (mmdebstrap $(date -u +%Y-%m-%d))" \
  "$work/rootfs.tar" "$LOCAL" >/dev/null
say "made $LOCAL ($(docker image inspect -f '{{.Size}}' "$LOCAL" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$LOCAL"
