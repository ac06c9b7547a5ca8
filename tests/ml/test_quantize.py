"""The int8 path: built from the fp32 graph and the committed range table, checked against fp32."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from catdog.ml.backbones import create_backbone
from catdog.ml.backbones.base import ensure_onnx, packaged_calibration_table
from catdog.ml.preprocessing import CAFFE_BGR, load_image
from catdog.settings import get_settings

from ..conftest import CATSDOGS


def test_int8_vgg16_features_match_fp32() -> None:
    backbone = create_backbone("vgg16", get_settings().weights_dir)
    int8 = ensure_onnx(backbone, "int8", packaged_calibration_table("vgg16"))
    assert int8.name.startswith("features_int8_")
    paths = sorted((CATSDOGS / "test" / "cats").iterdir())[:2] + sorted((CATSDOGS / "test" / "dogs").iterdir())[:2]
    x = CAFFE_BGR(np.stack([load_image(p) for p in paths]))
    run = {}
    for name, path in (("fp32", backbone.onnx_path("fp32")), ("int8", int8)):
        run[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    ops = {node.op_type for node in __import__("onnx").load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    a, b = run["fp32"], run["int8"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.995, cosine
