"""One registry of pretrained backbones and a factory, in the manner of timm's create_model.

A backbone is a small uniform unit: a spec (plain data), an architecture, where its weights
come from, and how they are turned into the project's own artifacts (a PyTorch state dict for
training and an ONNX graph with dynamic batch for serving and feature extraction).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from catdog.errors import UsageProblem
from catdog.ml.backbones.base import Backbone, BackboneSpec

_REGISTRY: dict[str, type[Backbone]] = {}
B = TypeVar("B", bound=type[Backbone])


def register_backbone(cls: B) -> B:
    _REGISTRY[cls.spec.name] = cls
    return cls


class UnknownBackbone(UsageProblem):
    """No backbone of that name is registered."""


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _backbone_class(name: str) -> type[Backbone]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackbone(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


def create_backbone(name: str, weights_dir: Path, **kwargs: object) -> Backbone:
    """Build a registered backbone by name; UnknownBackbone lists the known names.

    weights_dir: the folder of converted weights and graphs (settings.weights_dir); the backbone's
    files live in weights_dir/<name>.
    """
    return _backbone_class(name)(weights_dir, **kwargs)


def backbone_spec(name: str) -> BackboneSpec:
    """A registered backbone's spec (plain data: no weights needed); UnknownBackbone for another name."""
    return _backbone_class(name).spec


# Importing the units registers them.
from catdog.ml.backbones import efficientnet_lite0, vgg16  # noqa: E402,F401

__all__: list[str] = [
    "Backbone",
    "BackboneSpec",
    "UnknownBackbone",
    "backbone_spec",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
