"""The drift monitor follows a swap of production: the new model's own reference, never the old one's."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from catdog.ml.artifacts import DRIFT_REFERENCE_NPZ
from catdog.web.monitor import DriftMonitor


def test_the_reference_follows_the_served_model_dir(lite0_model: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(lite0_model, tmp_path / "other"))
    (other / DRIFT_REFERENCE_NPZ).unlink()
    service: Any = SimpleNamespace(model_dir=lite0_model)
    monitor = DriftMonitor(service, sessions=None, interval=3600)  # type: ignore[arg-type]
    assert monitor.reference() is not None and monitor.reference_error is None
    service.model_dir = other  # production swapped to a model without a reference
    assert monitor.reference() is None and str(other) in str(monitor.reference_error)
    service.model_dir = lite0_model  # and back
    assert monitor.reference() is not None and monitor.reference_error is None
