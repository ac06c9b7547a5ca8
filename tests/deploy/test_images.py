"""The images' requirement files stay subsets of requirements.lock (deploy/docker/lock_subset.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"


def _lock_subset() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_subset", DOCKER / "lock_subset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_requirement_files_match_the_lock() -> None:
    done = subprocess.run([sys.executable, str(DOCKER / "lock_subset.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_serving_needs_no_torch_and_training_does_not_install_it_from_the_list() -> None:
    serve = (DOCKER / "requirements-serve.txt").read_text().lower()
    worker = (DOCKER / "requirements-worker.txt").read_text().lower()
    for name in ("torch==", "mlflow==", "pandas==", "pyarrow==", "flask=="):
        assert f"\n{name}" not in serve, name
    assert "\nonnxruntime==" in serve and "\nmlflow-skinny==" in serve
    assert "\nefficientnet-lite-pytorch==" in worker and "\ntorch==" not in worker  # torch: the CPU build, apart
    assert "\nasync-timeout==" in serve  # redis needs it on Debian's Python 3.11.2


def test_a_disagreeing_pin_is_found(tmp_path: Path) -> None:
    module = _lock_subset()
    pins = module.read_lock()
    numpy = pins["numpy"]
    wrong = tmp_path / "requirements-mlflow.txt"
    wrong.write_text(f"# header\n{numpy}\nnumpy==0.0.1\npython-dateutil==2.9.0.post0\n")
    found = module.mlflow_disagreements(wrong)
    assert found == [f"numpy==0.0.1 (lock: {numpy})"]  # python-dateutil may differ: botocore needs < 3
