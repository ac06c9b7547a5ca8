"""The self-describing model directory, readable without PyTorch or training code.

MODEL_DIR/
  model.onnx          [built] the fp32 backbone + head in one graph: image (N,3,S,S) float32 ->
                      p_dog (N,), features (N,C) (the pooled backbone output the head reads),
                      feature_map (N,C,h,w) (the last conv block's map, for Grad-CAM)
  model_int8.onnx     [built] the same graph and outputs with the int8 (QDQ) backbone; built when
                      a calibration table applies (the directory's own calibration.json, else
                      the backbone's packaged one), never for a fine-tuned last block.
                      Which of the two runs: catdog.ml.precision.resolve_precision
  pet_gate.onnx       [built] EfficientNet-Lite0 ImageNet head: image -> P(cat or dog at all) (the
                      older pet gate, for directories whose config names it; see catdog.ml.pet_ood)
  head.npz            the trained head: linear{i}.weight (out, in), linear{i}.bias (committed)
  calibration.json    int8 activation ranges, when the head was trained on int8 features
  last_block.npz      the fine-tuned last backbone block (--finetune-last-block models only)
  model_config.json   everything needed to use and to reproduce the model; "precision" is the
                      precision of the features the head was trained on
  metrics.json        evaluation on held-out data through model.onnx (fp32)
  metrics_int8.json   the same through model_int8.onnx, when it was evaluated
  drift_reference.npz what drift is measured against: P(dog) on the test split, pooled features
                      of up to 512 training images per graph precision (catdog.ml.drift)
  history.json        per-epoch training curves
  plots/*.png         confusion matrix, ROC curve, training curves, worst mistakes

Graphs built before the features/feature_map outputs existed still answer p_dog (predict,
evaluate); Predictor.infer and Grad-CAM ask for `catdog build MODEL_DIR`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catdog import CLASS_NAMES
from catdog.errors import UsageProblem

FORMAT_VERSION = 1
MODEL_ONNX = "model.onnx"  # the fp32 graph
MODEL_INT8_ONNX = "model_int8.onnx"
MODEL_GRAPHS = {"fp32": MODEL_ONNX, "int8": MODEL_INT8_ONNX}  # precision -> file name
# the served graph's outputs
P_DOG, FEATURES, FEATURE_MAP = "p_dog", "features", "feature_map"
PET_GATE_ONNX = "pet_gate.onnx"
HEAD_NPZ = "head.npz"
LAST_BLOCK_NPZ = "last_block.npz"  # fine-tuned backbone block, for --finetune-last-block models
CALIBRATION_JSON = "calibration.json"
CONFIG_JSON = "model_config.json"
METRICS_JSON = "metrics.json"
DRIFT_REFERENCE_NPZ = "drift_reference.npz"
HISTORY_JSON = "history.json"
PLOTS_DIR = "plots"


def default_pet_gate() -> dict[str, Any]:
    """model_config.json's "pet_gate" for new models (catdog.ml.pet_ood: method, k, threshold)."""
    from catdog.ml.pet_ood import DEFAULT_K, DEFAULT_THRESHOLD, METHOD

    return {"method": METHOD, "k": DEFAULT_K, "threshold": DEFAULT_THRESHOLD}


class ModelDirError(UsageProblem):
    """The folder is not a usable catdog model directory."""


@dataclass
class ModelConfig:
    backbone: str
    precision: str
    normalization: dict[str, Any]
    head: dict[str, Any]
    threshold: float = 0.5
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    # the pet gate: the features' k-NN out-of-distribution score (catdog.ml.pet_ood); directories
    # written before it say {"file": "pet_gate.onnx", "threshold": 0.05} (the ImageNet-head graph)
    pet_gate: dict[str, Any] = field(default_factory=default_pet_gate)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def input_size(self) -> int:
        return int(self.normalization.get("size", 224))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = self.input_size
        return data

    def save(self, model_dir: Path) -> None:
        write_json(model_dir / CONFIG_JSON, self.to_dict())

    @classmethod
    def load(cls, model_dir: Path) -> ModelConfig:
        path = Path(model_dir) / CONFIG_JSON
        if not path.is_file():
            raise ModelDirError(f"{model_dir} is not a model directory: no {CONFIG_JSON}")
        try:
            data = json.loads(path.read_text())
            data.pop("input_size", None)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelDirError(f"{path} is not a valid model config: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; model files are meant to be shared
    os.replace(tmp, path)


def metrics_path(model_dir: Path, precision: str) -> Path:
    """Where the evaluation of a model's graph of `precision` lives: metrics.json for fp32, metrics_int8.json."""
    return Path(model_dir) / (METRICS_JSON if precision == "fp32" else f"metrics_{precision}.json")


def served_metrics_path(model_dir: Path, precision: str) -> Path | None:
    """The evaluation that describes what serves: the precision's own, else the other one, else None."""
    for candidate in (precision, "fp32", "int8"):
        path = metrics_path(model_dir, candidate)
        if path.is_file():
            return path
    return None
