from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from catdog.ml.export import build_model_dir, head_graph
from catdog.ml.head import Head, HeadConfig, head_arrays


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
    build_model_dir(model_copy)
    np.testing.assert_allclose(Predictor(model_copy).p_dog(x), before, atol=1e-6)
