"""Shared fixtures: committed images, an isolated feature cache, and tiny trained models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CATSDOGS = FIXTURES / "catsdogs"


@pytest.fixture(autouse=True)
def _isolated_features(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets the shared weights cache but a feature cache and a state folder of the session's own."""
    monkeypatch.setenv("CATDOG_FEATURES_DIR", str(tmp_path_factory.getbasetemp() / "features"))
    monkeypatch.setenv("CATDOG_STATE_DIR", str(tmp_path_factory.getbasetemp() / "state"))
    # workers started by tests do not warm the feature cache behind their backs (tests/jobs/test_warm.py does)
    monkeypatch.setenv("CATDOG_WARM_FEATURES", "false")


@pytest.fixture(scope="session")
def catsdogs() -> Path:
    return CATSDOGS


def _train_tiny(
    out: Path, backbone: str, views: int, epochs: int, precision: str | None = None, drift_reference: bool = True
) -> Path:
    import os

    from catdog.ml.features import AugmentRecipe
    from catdog.ml.train import TrainConfig, train

    os.environ.setdefault("CATDOG_FEATURES_DIR", str(out.parent / "features"))
    config = TrainConfig(
        data=str(CATSDOGS),
        out=str(out),
        backbone=backbone,
        views=views,
        epochs=epochs,
        precision=precision,
        augment=AugmentRecipe(seed=1),
        drift_reference=drift_reference,
    )
    return train(config, progress=False).model_dir


@pytest.fixture(scope="session")
def lite0_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0 head trained for a few epochs on the fixtures (fast backbone)."""
    return _train_tiny(tmp_path_factory.mktemp("lite0") / "model", "efficientnet_lite0", views=2, epochs=8)


@pytest.fixture(scope="session")
def vgg16_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VGG16 head on the fixtures, plain views only (VGG16 runs ~2 img/s on 2 cores)."""
    model = tmp_path_factory.mktemp("vgg16") / "model"
    return _train_tiny(model, "vgg16", views=1, epochs=5, drift_reference=False)  # its int8 pass costs ~9 s


@pytest.fixture
def model_copy(lite0_model: Path, tmp_path: Path) -> Path:
    """A disposable copy of the tiny Lite0 model directory."""
    return Path(shutil.copytree(lite0_model, tmp_path / "model"))


@pytest.fixture(scope="session")
def shipped_lite0(lite0_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding only the tiny Lite0 model, as `models/` holds the shipped ones."""
    models = tmp_path_factory.mktemp("shipped")
    shutil.copytree(lite0_model, models / "efficientnet_lite0")
    return models
