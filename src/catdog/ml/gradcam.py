"""Grad-CAM on the last convolutional block, in NumPy: no PyTorch in the serving path.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017): for a class score y and the last conv block's feature
map A (C, h, w), the channel weights are alpha_k = mean over (i, j) of dy/dA_k(i, j), and the map
is ReLU(sum_k alpha_k A_k). The served graph outputs A ("feature_map") and the pooled features
f = the spatial mean of A ("features"); the head is a small MLP on f, so dy/dA_k(i, j) =
(dy/df_k) / (h*w) exactly, and dy/df comes analytically from the head's weights (head.npz).

The class score is the head's logit for a dog prediction and minus the logit for a cat
prediction (the cat logit of a two-class sigmoid model). Heat maps are drawn with a built-in
"turbo" colormap (Mikhailov, Google AI blog 2019) and Pillow: no matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catdog.ml.artifacts import HEAD_NPZ, ModelConfig, ModelDirError

L2_EPS = 1e-12  # as torch.nn.functional.normalize: f / max(||f||, eps)


@dataclass(frozen=True)
class NumpyHead:
    """The trained head as plain float64 arrays: [L2 normalize x l2_scale] -> Linear/ReLU ... -> Linear -> logit."""

    weights: tuple[np.ndarray, ...]  # linear{i}.weight, (out, in)
    biases: tuple[np.ndarray, ...]  # linear{i}.bias, (out,)
    l2_scale: float | None  # None: the features go into the first layer as they are

    @property
    def in_features(self) -> int:
        return int(self.weights[0].shape[1])

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any] | None = None) -> NumpyHead:
        """From head.npz's arrays and the model config's "head" entry (l2_normalize, l2_scale).

        Raises ModelDirError when the layers are missing, do not chain, or do not end in one logit.
        """
        n_layers = len([key for key in arrays if key.startswith("linear") and key.endswith(".weight")])
        if n_layers == 0:
            raise ModelDirError("the head has no linear0.weight")
        try:
            weights = tuple(_frozen(arrays[f"linear{i}.weight"]) for i in range(n_layers))
            biases = tuple(_frozen(arrays[f"linear{i}.bias"]) for i in range(n_layers))
        except KeyError as exc:
            raise ModelDirError(f"the head lacks {exc.args[0]}") from None
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            chained = i == 0 or w.shape[1] == weights[i - 1].shape[0]
            if w.ndim != 2 or b.shape != (w.shape[0],) or not chained:
                raise ModelDirError(f"the head's layer {i} has weight {w.shape} and bias {b.shape}: they do not chain")
        if weights[-1].shape[0] != 1:
            raise ModelDirError(f"the head ends in {weights[-1].shape[0]} outputs, not one logit")
        l2 = bool(config and config.get("l2_normalize"))
        return cls(weights, biases, float(config["l2_scale"]) if l2 and config else None)

    @classmethod
    def from_model_dir(cls, model_dir: Path, config: ModelConfig | None = None) -> NumpyHead:
        """From MODEL_DIR/head.npz and model_config.json; ModelDirError when head.npz is missing."""
        path = Path(model_dir) / HEAD_NPZ
        if not path.is_file():
            raise ModelDirError(f"{path} is missing: Grad-CAM needs the trained head's weights")
        config = config or ModelConfig.load(model_dir)
        with np.load(path) as npz:
            return cls.from_arrays({key: npz[key] for key in npz.files}, config.head)

    def logit(self, features: np.ndarray) -> np.ndarray:
        """head_logit(self, features): float64 (N,) from features (N, C)."""
        return head_logit(self, features)

    def gradient(self, features: np.ndarray) -> np.ndarray:
        """head_gradient(self, features): d logit / d features, float64 (N, C)."""
        return head_gradient(self, features)


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64)
    out.flags.writeable = False  # shared by threads: nobody may change it
    return out


def _forward(head: NumpyHead, features: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(logit (N,), pre-activations of the hidden layers, L2 norms (N, 1) or empty)."""
    x = _as_features(head, features)
    norms = np.empty(0)
    if head.l2_scale is not None:
        norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), L2_EPS)
        x = x / norms * head.l2_scale
    pre: list[np.ndarray] = []
    for weight, bias in zip(head.weights[:-1], head.biases[:-1], strict=True):
        pre.append(x @ weight.T + bias)
        x = np.maximum(pre[-1], 0.0)
    logit = (x @ head.weights[-1].T + head.biases[-1])[:, 0]
    return logit, pre, norms


def _as_features(head: NumpyHead, features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != head.in_features:
        raise ValueError(f"features must be (N, {head.in_features}), got {x.shape}")
    return x


def head_logit(head: NumpyHead, features: np.ndarray) -> np.ndarray:
    """The head's logit for "dog", float64 (N,), from pooled features (N, C) (any float dtype).

    Equals log(p_dog / (1 - p_dog)) of the served graph. Raises ValueError on a wrong shape.
    """
    return _forward(head, features)[0]


def head_gradient(head: NumpyHead, features: np.ndarray) -> np.ndarray:
    """d logit / d features, float64 (N, C), by backpropagation through the head by hand.

    Through the ReLUs (gradient 0 where the pre-activation is <= 0) and the L2 normalization
    z = s * f / ||f||, whose Jacobian is s * (I - u u^T) / ||f|| with u = f / ||f||.
    """
    x = _as_features(head, features)
    _, pre, norms = _forward(head, x)
    grad = np.broadcast_to(head.weights[-1][0], (len(x), head.weights[-1].shape[1]))
    for weight, z in zip(reversed(head.weights[:-1]), reversed(pre), strict=True):
        grad = (grad * (z > 0)) @ weight
    if head.l2_scale is not None:
        unit = x / norms
        grad = head.l2_scale * (grad - unit * (unit * grad).sum(axis=1, keepdims=True)) / norms
    return np.array(grad, dtype=np.float64)


def class_gradient(head: NumpyHead, features: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Gradient (N, C) float64 of the predicted class's score: +logit for dog, -logit for cat.

    An image is a dog when sigmoid(logit) >= threshold, as Predictor decides.
    """
    logit = head_logit(head, features)
    dog = logit >= np.log(threshold / (1.0 - threshold))
    return head_gradient(head, features) * np.where(dog, 1.0, -1.0)[:, None]


def grad_cam(feature_map: np.ndarray, grad_features: np.ndarray) -> np.ndarray:
    """Grad-CAM maps, float32 (N, h, w) in [0, 1], from feature_map (N, C, h, w) and dy/dfeatures (N, C).

    alpha_k = grad_features_k / (h*w) (features are the spatial mean of the map, so this is the
    mean over (i, j) of dy/dA_k(i, j)); cam = ReLU(sum_k alpha_k A_k), divided by its maximum
    per image (all zeros when no cell has positive evidence). Raises ValueError on mismatched shapes.
    """
    maps = np.asarray(feature_map, dtype=np.float64)
    grads = np.asarray(grad_features, dtype=np.float64)
    if maps.ndim != 4 or grads.shape != maps.shape[:2]:
        raise ValueError(f"need feature_map (N, C, h, w) and grad_features (N, C), got {maps.shape} and {grads.shape}")
    alpha = grads / (maps.shape[2] * maps.shape[3])
    cam = np.maximum(np.einsum("nc,nchw->nhw", alpha, maps), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def explain(head: NumpyHead, features: np.ndarray, feature_map: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Grad-CAM of each image's predicted class: float32 (N, h, w) in [0, 1] (see grad_cam)."""
    return grad_cam(feature_map, class_gradient(head, features, threshold))


# --- drawing -------------------------------------------------------------------------------
# "turbo" (Mikhailov, Google AI blog 2019) at 17 evenly spaced levels, 0..255 RGB, as in matplotlib's
# table; linear interpolation between them stays within 8/255 of the full table.
_TURBO_STOPS = np.array(
    [
        [48, 18, 59], [64, 64, 162], [70, 107, 227], [66, 148, 255], [40, 188, 235], [24, 221, 194],
        [50, 242, 152], [109, 254, 98], [164, 252, 60], [205, 236, 52], [238, 207, 58], [253, 172, 52],
        [251, 126, 33], [235, 80, 14], [208, 47, 5], [169, 22, 1], [122, 4, 3],
    ],
    dtype=np.float64,
)  # fmt: skip


def turbo_lut() -> np.ndarray:
    """The turbo colormap as a uint8 (256, 3) RGB lookup table (dark blue -> cyan -> yellow -> dark red)."""
    levels, stops = np.linspace(0.0, 1.0, 256), np.linspace(0.0, 1.0, len(_TURBO_STOPS))
    channels = [np.interp(levels, stops, _TURBO_STOPS[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


TURBO = turbo_lut()


def overlay_png(image_rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> bytes:
    """PNG bytes: the heat map over the photo, at the photo's size.

    image_rgb: uint8 (H, W, 3). cam: (h, w) in [0, 1] (one map from grad_cam), upsampled
    bicubically to (H, W); it covers the whole photo, as the model input is the whole photo
    squashed to a square. Colour: TURBO; opacity alpha * (0.3 + 0.7 * cam) per pixel, so the
    photo shows through where there is little evidence. Raises ValueError on wrong shapes.
    """
    photo = np.asarray(image_rgb)
    heat = np.asarray(cam, dtype=np.float32)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8 or heat.ndim != 2:
        got = f"{photo.shape} {photo.dtype} and {heat.shape}"
        raise ValueError(f"need a uint8 (H, W, 3) image and an (h, w) cam, got {got}")
    height, width = photo.shape[:2]
    smooth = Image.fromarray(np.clip(heat, 0.0, 1.0)).resize((width, height), Image.Resampling.BICUBIC)
    level = np.clip(np.asarray(smooth, dtype=np.float32), 0.0, 1.0)
    colours = TURBO[np.round(level * 255).astype(np.uint8)].astype(np.float32)
    weight = (alpha * (0.3 + 0.7 * level))[..., None]
    blended = photo.astype(np.float32) * (1.0 - weight) + colours * weight
    out = io.BytesIO()
    Image.fromarray(np.round(blended).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()
