"""A registry whose production is the tiny Lite0 fixture model, and settings for retraining on the fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catdog.registry import Registry
from catdog.settings import Settings

from ..conftest import CATSDOGS


def retrain_settings(tmp_path: Path, models_dir: Path, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "data_dir": CATSDOGS,
        "models_dir": models_dir,
        "default_model": "efficientnet_lite0",
        "retrain_min_per_class": 5,
        "gate_tolerance": 1.0,
        "gate_min_accuracy": 0.0,  # the tiny fixture model is judged on 12 test photos: no floor
        "job_heartbeat_seconds": 0.2,
        "log_format": "text",
        **overrides,
    }
    return Settings(**options)


@pytest.fixture
def settings(tmp_path: Path, shipped_lite0: Path) -> Settings:
    settings = retrain_settings(tmp_path, shipped_lite0)
    Registry(settings).bootstrap()
    return settings
