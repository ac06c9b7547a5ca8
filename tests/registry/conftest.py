"""Registry fixtures: tiny fake model directories, a state folder with MLflow's tables made once, no network."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FINGERPRINT = "9979e59a46b0376fb38e272044587377eff1607ad286ac52586ab6ccca3f7308"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry must never reach the network: any TCP connection fails the test."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network connection attempted to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def make_model_dir(
    path: Path, backbone: str, *, accuracy: float = 0.9, seed: int = 0, metrics_file: str = "metrics.json"
) -> Path:
    """A fake catdog model directory: the files the registry reads, a few bytes each (no real graph)."""
    (path / "plots").mkdir(parents=True)
    config = {
        "backbone": backbone,
        "precision": "fp32",
        "normalization": {"size": 224},
        "head": {"hidden": [8]},
        "training": {"epochs": 3, "lr": 0.001, "head": {"hidden": [8], "dropout": [0.5]}, "seed": seed},
        "data": {"root": "/data/catsdogs/train", "fingerprint": FINGERPRINT, "counts": {"cat": 10, "dog": 12}},
    }
    (path / "model_config.json").write_text(json.dumps(config))
    (path / "head.npz").write_bytes(f"head {backbone} {seed}".encode())
    (path / "model.onnx").write_bytes(b"not really onnx " + backbone.encode())
    metrics = {
        "n": 40,
        "accuracy": accuracy,
        "precision": 0.9,
        "recall": 0.8,
        "f1": 0.85,
        "roc_auc": 0.95,
        "log_loss": 0.3,
        "confusion_matrix": [[18, 2], [2, 18]],
    }
    (path / metrics_file).write_text(json.dumps(metrics))
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_accuracy": 0.5 + e / 10, "lr": 0.001} for e in (1, 2, 3)]
    (path / "history.json").write_text(json.dumps(history))
    (path / "plots" / "roc_curve.png").write_bytes(b"\x89PNG fake")
    (path / "plots" / "confusion_matrix.png").write_bytes(b"\x89PNG fake")
    return path


@pytest.fixture(scope="session")
def _mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mlflow.db with MLflow's tables created and migrated once (seconds); tests copy it."""
    from catdog.registry import Registry
    from catdog.settings import Settings

    state = tmp_path_factory.mktemp("mlflow-template")
    Registry(Settings(state_dir=state, models_dir=state / "no-models"))
    return state / "mlflow.db"


@pytest.fixture
def settings(tmp_path: Path, _mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings over a fresh state folder (MLflow's empty tables ready) and models/{vgg16,efficientnet_lite0}."""
    from catdog.settings import Settings

    for name in (
        "CATDOG_MLFLOW_TRACKING_URI",
        "CATDOG_MLFLOW_ARTIFACT_ROOT",
        "CATDOG_REGISTERED_MODEL",
        "CATDOG_EXPERIMENT",
        "CATDOG_DEFAULT_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(_mlflow_db, state / "mlflow.db")
    models = tmp_path / "models"
    make_model_dir(models / "vgg16", "vgg16", accuracy=0.985)
    make_model_dir(models / "efficientnet_lite0", "efficientnet_lite0", accuracy=0.97)
    monkeypatch.setenv("CATDOG_STATE_DIR", str(state))
    monkeypatch.setenv("CATDOG_MODELS_DIR", str(models))
    return Settings(state_dir=state, models_dir=models)


@pytest.fixture
def registry(settings: Any) -> Any:
    from catdog.registry import Registry

    return Registry(settings)


@pytest.fixture
def trained(tmp_path: Path) -> Callable[..., Path]:
    """make(name, accuracy=..., seed=...) -> a new fake model directory under tmp_path/trained/."""
    counter = iter(range(1, 1000))

    def make(backbone: str = "vgg16", accuracy: float = 0.99) -> Path:
        n = next(counter)
        return make_model_dir(tmp_path / "trained" / f"m{n}", backbone, accuracy=accuracy, seed=n)

    return make
