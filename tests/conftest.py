"""Shared fixtures: committed images, an isolated feature cache, and tiny trained models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from catdog.settings import Settings

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
    from catdog.settings import get_settings

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
    model_dir = train(config, progress=False, settings=get_settings()).model_dir
    # the pet gate's reference here is the ~56 fixture photos, not 512 of 8,000: its far tail is a
    # coarse fit, so the tiny models flag below 0.01 (the shipped models' 0.003 is calibrated by
    # bench/pet_gate.py on the real test split; fixtures' coffee scores 0.004, rocket 0.001, chelsea 0.75)
    from catdog.ml.artifacts import ModelConfig

    model_config = ModelConfig.load(model_dir)
    model_config.pet_gate = {**model_config.pet_gate, "threshold": 0.01}
    model_config.save(model_dir)
    return model_dir


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


def settings_apart_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: Settings | None = None, **update: Any
) -> Settings:
    """A Settings whose folders are under tmp_path/"mine", while the environment points everywhere else.

    The settings: cache_dir tmp_path/"mine" (its weights/ a link to the shared weights cache, so
    nothing is converted again), the feature cache mine/features, plus `update` (threads,
    precision, ...), over `base` (default: the environment's settings, read first). Then the
    CATDOG_* variables name tmp_path/"env" folders, 2 threads and int8, and
    catdog.settings.get_settings raises: code given these settings that still consults the
    environment fails, or writes under tmp_path/"env".
    """
    import catdog.settings

    base = base if base is not None else catdog.settings.get_settings()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "weights").symlink_to(base.weights_dir, target_is_directory=True)
    settings = base.model_copy(update={"cache_dir": mine, "features_dir_override": None, **update})
    env = tmp_path / "env"
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(env / "cache"))
    monkeypatch.setenv("CATDOG_FEATURES_DIR", str(env / "features"))
    monkeypatch.setenv("CATDOG_THREADS", "2")
    monkeypatch.setenv("CATDOG_PRECISION", "int8")

    def environment_read() -> Settings:
        raise AssertionError("code given explicit settings read the environment's (catdog.settings.get_settings)")

    monkeypatch.setattr(catdog.settings, "get_settings", environment_read)
    return settings


def record_session_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The intra-op thread count of every ONNX Runtime session feature extraction opens from now on."""
    import catdog.ml.features

    opened: list[int] = []
    make_session = catdog.ml.features.make_session

    def recording(path: Path, threads: int = 0, spin: bool = True) -> Any:
        opened.append(threads)
        return make_session(path, threads, spin)

    monkeypatch.setattr(catdog.ml.features, "make_session", recording)
    return opened
