"""Grad-CAM in NumPy: the head's gradient against finite differences, the logit against the served
graph, where the map lights up, and the overlay PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog.ml.artifacts import ModelDirError
from catdog.ml.gradcam import (
    TURBO,
    NumpyHead,
    class_gradient,
    grad_cam,
    head_gradient,
    head_logit,
    overlay_png,
)
from catdog.ml.predictor import Predictor
from catdog.ml.preprocessing import load_image

from ..conftest import CATSDOGS, FIXTURES


def synthetic_head(l2_normalize: bool, in_features: int = 12, hidden: tuple[int, ...] = (9, 5)) -> NumpyHead:
    rng = np.random.default_rng(3)
    arrays, width = {}, in_features
    for i, units in enumerate((*hidden, 1)):
        arrays[f"linear{i}.weight"] = rng.normal(scale=0.7, size=(units, width))
        arrays[f"linear{i}.bias"] = rng.normal(scale=0.3, size=units)
        width = units
    return NumpyHead.from_arrays(arrays, {"l2_normalize": l2_normalize, "l2_scale": 7.0})


def finite_difference_gradient(head: NumpyHead, features: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences, one feature at a time, in float64."""
    grad = np.zeros_like(features)
    for k in range(features.shape[1]):
        step = np.zeros_like(features)
        step[:, k] = eps
        grad[:, k] = (head_logit(head, features + step) - head_logit(head, features - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("l2_normalize", [False, True])
def test_head_gradient_matches_finite_differences_on_a_synthetic_head(l2_normalize: bool) -> None:
    head = synthetic_head(l2_normalize)
    features = np.random.default_rng(0).normal(size=(6, 12))
    np.testing.assert_allclose(
        head_gradient(head, features), finite_difference_gradient(head, features), rtol=1e-5, atol=1e-7
    )


def test_head_gradient_matches_finite_differences_on_the_trained_head(lite0_model: Path) -> None:
    head = NumpyHead.from_model_dir(lite0_model)
    assert head.l2_scale is not None  # the trained head normalizes its input: the harder case
    features = np.random.default_rng(1).uniform(0.0, 3.0, size=(4, head.in_features))  # like pooled ReLU6 maps
    numeric = finite_difference_gradient(head, features)
    analytic = head.gradient(features)
    assert np.abs(analytic).max() > 1e-4  # a gradient that is not trivially zero
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-7)


def test_numpy_logit_matches_the_served_graph(lite0_model: Path) -> None:
    predictor = Predictor(lite0_model)
    paths = sorted((CATSDOGS / "test" / "cats").iterdir())[:3] + sorted((CATSDOGS / "test" / "dogs").iterdir())[:3]
    out = predictor.infer(np.stack([load_image(p, 224) for p in paths]))
    assert predictor.head is not None
    logit = head_logit(predictor.head, out.features)
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logit)), out.p_dog, atol=1e-5)
    moderate = (out.p_dog > 1e-4) & (out.p_dog < 1 - 1e-4)
    assert moderate.any()
    p = out.p_dog[moderate]
    np.testing.assert_allclose(logit[moderate], np.log(p / (1 - p)), atol=2e-3)


def test_the_predicted_class_is_explained(lite0_model: Path) -> None:
    head = NumpyHead.from_model_dir(lite0_model)
    features = np.random.default_rng(2).uniform(0.0, 3.0, size=(8, head.in_features))
    dog = head_logit(head, features) >= 0
    sign = np.where(dog, 1.0, -1.0)[:, None]
    np.testing.assert_allclose(class_gradient(head, features), head_gradient(head, features) * sign)


def test_grad_cam_has_the_documented_shape_and_range() -> None:
    rng = np.random.default_rng(4)
    cam = grad_cam(rng.uniform(0, 6, size=(3, 16, 7, 5)), np.abs(rng.normal(size=(3, 16))))
    assert cam.shape == (3, 7, 5) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert np.allclose(cam.max(axis=(1, 2)), 1.0)  # each map normalized by its own peak


def test_grad_cam_lights_up_where_the_evidence_is() -> None:
    """Only cell (2, 3) carries the direction that raises the score; elsewhere the map opposes it."""
    rng = np.random.default_rng(5)
    grad = rng.normal(size=(1, 32))
    feature_map = np.zeros((1, 32, 7, 7))
    feature_map[0, :, :, :] = np.maximum(-grad[0], 0.0)[:, None, None]  # negative evidence everywhere
    feature_map[0, :, 2, 3] = 5.0 * np.maximum(grad[0], 0.0)  # positive evidence in one cell
    cam = grad_cam(feature_map, grad)[0]
    assert np.unravel_index(cam.argmax(), cam.shape) == (2, 3)
    assert cam[2, 3] == pytest.approx(1.0)
    assert np.count_nonzero(cam) == 1  # ReLU: the opposing cells give nothing


def test_grad_cam_of_no_evidence_is_all_zeros() -> None:
    grad = np.ones((1, 4))
    cam = grad_cam(-np.ones((1, 4, 3, 3)), grad)
    assert not cam.any()


def test_grad_cam_follows_a_real_head_to_the_evidence(lite0_model: Path) -> None:
    """End to end through the trained head: the cell holding features that score, lights up."""
    head = NumpyHead.from_model_dir(lite0_model)
    rng = np.random.default_rng(6)
    base = rng.uniform(0.0, 1.0, size=head.in_features)
    direction = class_gradient(head, base[None])[0]
    feature_map = np.tile(base[:, None, None], (1, 7, 7))
    feature_map[:, 5, 1] += 4.0 * np.maximum(direction, 0) / np.abs(direction).max()
    features = feature_map.mean(axis=(1, 2))[None]
    cam = grad_cam(feature_map[None], class_gradient(head, features))[0]
    assert np.unravel_index(cam.argmax(), cam.shape) == (5, 1)


def test_shapes_are_checked() -> None:
    head = synthetic_head(False)
    with pytest.raises(ValueError, match="features"):
        head_gradient(head, np.zeros((2, 11)))
    with pytest.raises(ValueError, match="feature_map"):
        grad_cam(np.zeros((2, 4, 3, 3)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="uint8"):
        overlay_png(np.zeros((10, 10, 3), np.float32), np.zeros((7, 7)))


def test_a_head_whose_layers_do_not_chain_is_refused() -> None:
    arrays = {"linear0.weight": np.zeros((4, 8)), "linear0.bias": np.zeros(4)}
    arrays |= {"linear1.weight": np.zeros((1, 5)), "linear1.bias": np.zeros(1)}
    with pytest.raises(ModelDirError, match="chain"):
        NumpyHead.from_arrays(arrays)


def test_the_colormap_runs_from_blue_to_red() -> None:
    assert TURBO.shape == (256, 3) and TURBO.dtype == np.uint8
    (r0, _, b0), (r1, _, b1) = TURBO[0].astype(int), TURBO[-1].astype(int)
    assert b0 > r0 and r1 > b1
    assert TURBO[128, 1] > 200  # green in the middle


def test_overlay_is_a_png_of_the_photo_size_with_heat_where_the_cam_is() -> None:
    photo = np.full((90, 160, 3), 128, np.uint8)  # not square: the cam stretches like the model input
    cam = np.zeros((7, 7), np.float32)
    cam[0, 0] = 1.0
    png = overlay_png(photo, cam)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (160, 90) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    hot, cold = np.abs(pixels[2, 2] - 128).sum(), np.abs(pixels[-2, -2] - 128).sum()
    assert hot > 2 * cold  # the photo shows through, faintly tinted, where the cam is zero


def test_overlay_of_a_real_photo(lite0_model: Path) -> None:
    predictor = Predictor(lite0_model)
    image, gate = predictor.decode(FIXTURES / "pets" / "chelsea.jpg")
    prediction, cam = predictor.explain(image, gate)
    assert cam.shape == (7, 7) and cam.min() >= 0.0 and cam.max() <= 1.0
    assert prediction.is_pet is True
    png = overlay_png(np.asarray(Image.open(FIXTURES / "pets" / "chelsea.jpg").convert("RGB")), cam)
    assert Image.open(io.BytesIO(png)).size == Image.open(FIXTURES / "pets" / "chelsea.jpg").size
