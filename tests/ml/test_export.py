from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from catdog.ml.export import build_graphs, build_model_dir, calibration_table, combine, head_graph
from catdog.ml.head import Head, HeadConfig, head_arrays
from catdog.settings import get_settings


@pytest.mark.parametrize("l2_normalize", [False, True])
def test_head_graph_computes_what_the_torch_head_computes(l2_normalize: bool) -> None:
    torch.manual_seed(0)
    config = HeadConfig(hidden=(16, 8), dropout=(0.5, 0.3), l2_normalize=l2_normalize, l2_scale=7.0)
    head = Head(32, config).eval()
    graph = head_graph(head_arrays(head), config.to_dict())
    x = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = torch.sigmoid(head(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(session.run(None, {"features": x})[0], expected, atol=1e-6)


def test_rebuilding_gives_the_same_predictions(model_copy: Path) -> None:
    x = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    from catdog.ml.predictor import Predictor

    before = Predictor(model_copy).p_dog(x)
    (model_copy / "model.onnx").unlink()
    (model_copy / "pet_gate.onnx").unlink()
    build_model_dir(model_copy, get_settings().weights_dir)
    np.testing.assert_allclose(Predictor(model_copy).p_dog(x), before, atol=1e-6)


def test_the_served_graph_outputs_p_dog_features_and_the_feature_map(lite0_model: Path) -> None:
    session = ort.InferenceSession(str(lite0_model / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["p_dog", "features", "feature_map"]  # p_dog stays output 0
    assert not (lite0_model / "model_int8.onnx").exists()  # no calibration table for Lite0


def fake_vgg16_model(model_dir: Path) -> Path:
    """A VGG16 model directory with a small random head: builds without training."""
    from catdog.ml.artifacts import ModelConfig
    from catdog.ml.preprocessing import CAFFE_BGR

    rng = np.random.default_rng(0)
    model_dir.mkdir()
    arrays = {
        "linear0.weight": rng.normal(scale=0.1, size=(16, 512)).astype(np.float32),
        "linear0.bias": np.zeros(16, np.float32),
        "linear1.weight": rng.normal(scale=0.3, size=(1, 16)).astype(np.float32),
        "linear1.bias": np.zeros(1, np.float32),
    }
    np.savez(model_dir / "head.npz", **arrays)
    head = {"hidden": [16], "dropout": [0.0], "l2_normalize": True, "l2_scale": 20.0}
    ModelConfig(backbone="vgg16", precision="fp32", normalization=CAFFE_BGR.to_dict(), head=head).save(model_dir)
    return model_dir


def test_vgg16_gets_an_int8_graph_with_the_same_outputs(tmp_path: Path) -> None:
    from catdog.ml.gradcam import head_logit
    from catdog.ml.predictor import Predictor
    from catdog.ml.preprocessing import load_image

    from ..conftest import FIXTURES

    model_dir = fake_vgg16_model(tmp_path / "vgg16")
    built = build_graphs(model_dir, get_settings().weights_dir)
    assert [(g.precision, g.path.name) for g in built] == [("fp32", "model.onnx"), ("int8", "model_int8.onnx")]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(built[1].path)).graph.node}
    images = np.stack([load_image(FIXTURES / "pets" / "chelsea.jpg"), load_image(FIXTURES / "nonpet" / "coffee.jpg")])
    predictors = {p: Predictor(model_dir, precision=p) for p in ("fp32", "int8")}
    outputs = {p: predictor.infer(images, feature_map=True) for p, predictor in predictors.items()}
    for out in outputs.values():
        assert out.feature_map.shape == (2, 512, 7, 7)  # block5_pool
        np.testing.assert_allclose(out.features, out.feature_map.mean(axis=(2, 3)), rtol=1e-4, atol=1e-3)
        head = predictors["fp32"].head
        assert head is not None
        logit = head_logit(head, out.features)
        np.testing.assert_allclose(1 / (1 + np.exp(-logit)), out.p_dog, atol=1e-5)
    a, b = outputs["fp32"].features, outputs["int8"].features
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99, cosine


def test_the_model_dirs_own_calibration_table_wins(tmp_path: Path) -> None:
    from catdog.ml.backbones.base import packaged_calibration_table

    assert calibration_table(tmp_path, "vgg16") == packaged_calibration_table("vgg16")
    assert calibration_table(tmp_path, "efficientnet_lite0") is None
    (tmp_path / "calibration.json").write_text("{}")
    assert calibration_table(tmp_path, "vgg16") == tmp_path / "calibration.json"
    assert calibration_table(tmp_path, "efficientnet_lite0") == tmp_path / "calibration.json"


def test_a_stale_int8_graph_is_removed_on_rebuild(model_copy: Path) -> None:
    (model_copy / "model_int8.onnx").write_bytes(b"stale")
    assert [g.precision for g in build_graphs(model_copy, get_settings().weights_dir)] == ["fp32"]
    assert not (model_copy / "model_int8.onnx").exists()


def test_a_backbone_without_a_pooled_feature_map_is_refused(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "no_reduce_mean",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "backbone.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    head = head_graph({"linear0.weight": np.ones((1, 4), np.float32), "linear0.bias": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="ReduceMean"):
        combine(path, head)
