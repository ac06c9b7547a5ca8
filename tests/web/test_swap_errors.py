"""Promoting a version whose model files are corrupt or missing: the old one serves, /api/models says why."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from catdog.registry import Registry, training_dataset
from catdog.settings import Settings, get_settings
from catdog.web.app import create_app

from ..conftest import CATSDOGS
from .conftest import wait_ready

ADMIN = {"Authorization": "Bearer swap-token"}


@pytest.fixture
def platform(tmp_path: Path, shipped_lite0: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app serving the registry's production (the tiny Lite0), polling the registry often."""
    env = {
        "STATE_DIR": tmp_path / "state",
        "DATA_DIR": CATSDOGS,
        "MODELS_DIR": shipped_lite0,
        "DEFAULT_MODEL": "efficientnet_lite0",
        "ADMIN_TOKEN": "swap-token",
        "REGISTRY_POLL_SECONDS": 0.2,
        "WARMUP_BATCH_SIZES": "1",
        "DRIFT_INTERVAL_SECONDS": 3600,
        "LOG_FORMAT": "text",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"CATDOG_{name}", str(value))
    with TestClient(create_app(get_settings(), configure_logs=False)) as client:
        wait_ready(client)
        yield client


def register_broken(settings: Settings, lite0_model: Path, folder: Path, damage: str) -> int:
    """A new version whose files are then damaged in the registry's artifact store ("corrupt" or "missing")."""
    model = Path(shutil.copytree(lite0_model, folder))
    (model / "head.npz").write_bytes((model / "head.npz").read_bytes() + b"\0")  # another content id
    registry = Registry(settings)
    info = registry.log_training_run(
        model,
        source="train",
        params={},
        history=[],
        test_metrics={"accuracy": 0.9, "n": 12},
        dataset=training_dataset({"fingerprint": "cd" * 32, "counts": {}}, "test"),
    )
    stored = registry.local_model_dir(info.version)
    if damage == "corrupt":
        (stored / "model.onnx").write_bytes(b"not an ONNX graph")
    else:
        (stored / "model_config.json").unlink()
    return info.version


def models_when(client: TestClient, ready: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        answer = client.get("/api/models").json()
        if ready(answer):
            return dict(answer)
        assert time.time() < deadline, answer
        time.sleep(0.1)


def test_a_promoted_version_that_cannot_load_is_named_with_its_reason(
    platform: TestClient, lite0_model: Path, tmp_path: Path
) -> None:
    settings = get_settings()
    assert platform.get("/api/models").json()["swap_error"] is None
    corrupt = register_broken(settings, lite0_model, tmp_path / "corrupt", "corrupt")
    missing = register_broken(settings, lite0_model, tmp_path / "missing", "missing")

    assert platform.post(f"/api/models/{corrupt}/promote", headers=ADMIN).status_code == 200
    answer = models_when(platform, lambda a: a["swap_error"] is not None)
    error = answer["swap_error"]
    assert (error["alias"], error["version"]) == ("production", corrupt)
    assert "ONNX" in error["reason"] or "onnx" in error["reason"], error
    assert str(settings.state_dir) not in error["reason"]  # a version, never a server path
    assert error["at"].endswith("Z") and error["retry_in_seconds"] >= 0
    by_version = {v["version"]: v for v in answer["versions"]}
    assert by_version[corrupt]["load_error"] == error and by_version[1]["load_error"] is None
    assert answer["production"] == corrupt and answer["served"]["production"]["version"] == 1  # the old one serves
    photo = next((CATSDOGS / "test" / "cats").iterdir())
    predicted = platform.post("/api/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert predicted.status_code == 200 and predicted.json()["registry_version"] == 1

    assert platform.post(f"/api/models/{missing}/promote", headers=ADMIN).status_code == 200
    answer = models_when(platform, lambda a: (a["swap_error"] or {}).get("version") == missing)
    assert "model_config.json" in answer["swap_error"]["reason"], answer["swap_error"]
    assert {v["version"]: v["load_error"] for v in answer["versions"]}[corrupt] is None  # no longer asked for

    assert platform.post("/api/models/1/promote", headers=ADMIN).status_code == 200  # back to a good one
    answer = models_when(platform, lambda a: a["swap_error"] is None)
    assert answer["served"]["production"]["version"] == 1 and answer["swap_errors"] == []

    # production history 1, corrupt, missing, 1: a rollback must not land on a version that failed to load
    rolled = platform.post("/api/models/rollback", headers=ADMIN)
    assert rolled.status_code == 409, rolled.text
    assert f"({missing}, {corrupt}) failed to load" in rolled.json()["detail"]
    assert platform.get("/api/models").json()["production"] == 1
