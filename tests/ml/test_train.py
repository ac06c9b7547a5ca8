"""Train tiny, export, load: the ONNX model agrees with PyTorch, and the directory describes itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from catdog.ml.artifacts import ModelConfig
from catdog.ml.backbones import create_backbone
from catdog.ml.data import DataError
from catdog.ml.head import HeadConfig, load_head
from catdog.ml.predictor import Predictor
from catdog.ml.preprocessing import load_image
from catdog.ml.train import TrainConfig, train
from catdog.settings import get_settings

from ..conftest import CATSDOGS, record_session_threads, settings_apart_from_the_environment


@pytest.mark.parametrize("fixture", ["lite0_model", "vgg16_model"])
def test_model_directory_is_complete(fixture: str, request: pytest.FixtureRequest) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    for name in ("model.onnx", "pet_gate.onnx", "head.npz", "model_config.json", "history.json"):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["class_names"] == ["cat", "dog"] and config["input_size"] == 224
    assert config["data"]["counts"] == {"cat": 16, "dog": 16}
    assert len(config["data"]["fingerprint"]) == 64
    assert config["training"]["epochs"] >= config["training"]["epochs_run"] >= config["training"]["best_epoch"] >= 1


@pytest.mark.parametrize("fixture", ["lite0_model", "vgg16_model"])
def test_onnx_and_pytorch_agree(fixture: str, request: pytest.FixtureRequest) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    config = ModelConfig.load(model_dir)
    backbone = create_backbone(config.backbone, get_settings().weights_dir)
    head = load_head(model_dir / "head.npz", backbone.spec.feature_dim, HeadConfig.from_dict(config.head))
    paths = sorted((CATSDOGS / "test" / "dogs").iterdir())[:3]
    images = np.stack([load_image(p, 224) for p in paths])
    with torch.no_grad():
        expected = torch.sigmoid(head(backbone.load_module()(torch.from_numpy(backbone.spec.normalization(images)))))
    actual = Predictor(model_dir, precision="fp32").p_dog(images)  # PyTorch runs fp32
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4)


def test_tiny_lite0_model_learns_the_fixtures(lite0_model: Path) -> None:
    predictions = Predictor(lite0_model).predict(sorted((CATSDOGS / "test" / "dogs").iterdir()))
    assert sum(p.predicted_class == "dog" for p in predictions) >= 5


def test_training_needs_both_classes(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    for path in (CATSDOGS / "train" / "cats").iterdir():
        (tmp_path / "cats" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DataError, match="both classes"):
        config = TrainConfig(data=str(tmp_path), out=str(tmp_path / "m"), backbone="efficientnet_lite0")
        train(config, progress=False, settings=get_settings())
    assert not (tmp_path / "m").exists()


def test_finetune_last_block_trains_block5_and_exports_it(tmp_path: Path) -> None:
    from catdog.ml.export import build_model_dir

    out = tmp_path / "ft"
    config = TrainConfig(
        data=str(CATSDOGS),
        out=str(out),
        backbone="vgg16",
        views=1,
        epochs=2,
        finetune_last_block=True,
        drift_reference=False,
        finetune_lr_scale=1.0,
    )
    train(config, progress=False, settings=get_settings())
    backbone = create_backbone("vgg16", get_settings().weights_dir)
    pretrained = backbone.load_state()
    with np.load(out / "last_block.npz") as arrays:
        tuned = {key: arrays[key] for key in arrays.files}
    assert set(tuned) == {f"block5_conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    assert not np.allclose(tuned["block5_conv3.weight"], pretrained["block5_conv3.weight"].numpy())

    body = backbone.build_body()
    body.load_state_dict({**pretrained, **{k: torch.from_numpy(v) for k, v in tuned.items()}})
    config_dict = ModelConfig.load(out)
    head = load_head(out / "head.npz", 512, HeadConfig.from_dict(config_dict.head))
    images = np.stack([load_image(p, 224) for p in sorted((CATSDOGS / "test" / "cats").iterdir())[:2]])
    with torch.no_grad():
        expected = torch.sigmoid(head(body(torch.from_numpy(backbone.spec.normalization(images))).mean(dim=(2, 3))))
    np.testing.assert_allclose(Predictor(out).p_dog(images), expected.numpy(), atol=1e-4)
    (out / "model.onnx").unlink()
    build_model_dir(out, get_settings().weights_dir)
    np.testing.assert_allclose(Predictor(out).p_dog(images), expected.numpy(), atol=1e-4)


@pytest.mark.parametrize(("backbone", "precision"), [("vgg16", "int8"), ("efficientnet_lite0", None)])
def test_finetune_refuses_what_it_cannot_do(tmp_path: Path, backbone: str, precision: str | None) -> None:
    from catdog.errors import UsageProblem

    config = TrainConfig(
        data=str(CATSDOGS), out=str(tmp_path / "m"), backbone=backbone, precision=precision, finetune_last_block=True
    )
    with pytest.raises(UsageProblem, match="finetune-last-block"):
        train(config, progress=False, settings=get_settings())


def test_training_uses_the_settings_it_is_given_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Features, threads, precision and weights come from the settings passed in; the environment says otherwise."""
    settings = settings_apart_from_the_environment(tmp_path, monkeypatch, threads=1, precision="fp32")
    threads = record_session_threads(monkeypatch)
    out = tmp_path / "model"
    config = TrainConfig(data=str(CATSDOGS), out=str(out), backbone="efficientnet_lite0", views=1, epochs=2)
    train(config, progress=False, settings=settings)  # CATDOG_PRECISION=int8 would be refused: Lite0 has no int8
    assert ModelConfig.load(out).precision == "fp32"
    caches = list((tmp_path / "mine" / "features").glob("efficientnet_lite0-*.sqlite"))
    assert caches and all(path.stat().st_size > 0 for path in caches)
    assert threads and set(threads) == {1}  # training's extraction and the drift reference's
    assert not (tmp_path / "env").exists()  # no feature cache, weights or timing written where the environment says


def test_the_training_graph_keeps_its_int8_timing_in_the_settings_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto on a CPU without int8 dot products times int8 against fp32 once, in settings.cache_dir/precision.json."""
    from catdog.ml import precision
    from catdog.ml.train import training_graph

    settings = settings_apart_from_the_environment(tmp_path, monkeypatch, threads=1)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    timed: list[tuple[str, int]] = []

    def fake_timing(graph: Path, size: int, threads: int) -> float:
        timed.append((graph.name, threads))
        return 1.0 if graph.name == "features_fp32.onnx" else 0.5  # int8 "twice as fast"

    monkeypatch.setattr(precision, "_best_run_seconds", fake_timing)
    graph = training_graph("vgg16", "auto", settings=settings)
    assert graph.precision == "int8" and graph.path.parent == tmp_path / "mine" / "weights" / "vgg16"
    assert len(timed) == 2 and {threads for _, threads in timed} == {1}
    (entry,) = json.loads((tmp_path / "mine" / precision.SPEED_CACHE).read_text()).values()
    assert entry["int8_speedup"] == 2.0
    assert not (tmp_path / "env").exists()
