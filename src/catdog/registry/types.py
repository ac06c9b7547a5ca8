"""What the registry hands out: ModelVersionInfo, and the errors a caller can act on (no MLflow import here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catdog.errors import CatdogError, UsageProblem

PRODUCTION, STAGING = "production", "staging"  # the aliases: what servers serve; the A/B challenger
ALIASES = (PRODUCTION, STAGING)
# the test-split metrics every version carries (None where the run did not log one)
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "n")
SOURCES = ("shipped", "train", "retrain")


class RegistryError(CatdogError):
    """The MLflow store could not be opened or refused an operation (one line)."""


class UnknownVersion(UsageProblem, LookupError):
    """No such version of the registered model (the API answers 404, the CLI exits 2)."""

    status_code = 404


class NothingToRollBack(UsageProblem):
    """Production has no earlier version to go back to (the API answers 409, the CLI exits 2)."""

    status_code = 409


@dataclass(frozen=True)
class ModelVersionInfo:
    """One version of the registered model, as catdog uses it.

    version: MLflow's version number (1, 2, ...); model_version: catdog's content id of the
    weights ("vgg16-a5ebe190", catdog.ml.predictor.model_version), what predictions record.
    model_dir: where the model directory is on this machine: the artifact folder itself for a
    file:// artifact store; for a remote store the cache folder that Registry.local_model_dir
    fills (call that before reading files from it). created_at: ISO 8601 UTC ("...Z").
    source: "shipped" | "train" | "retrain". metrics: the test split's accuracy, precision,
    recall, f1, roc_auc, log_loss (fractions) and n (images), None where not logged.
    tags: the version's MLflow tags (model_version, backbone, source, parent_version,
    data_digest, data_counts, data_uploads, plots, gate_verdict, gate_reason, gate_checks (JSON),
    gate_reference, previous_production ...).
    """

    version: int
    model_version: str
    backbone: str
    model_dir: Path
    aliases: tuple[str, ...]
    created_at: str
    run_id: str | None
    source: str
    metrics: dict[str, float | None] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def parent_version(self) -> int | None:
        return _int_or_none(self.tags.get("parent_version"))

    def gate_checks(self) -> list[dict[str, Any]]:
        """The promotion gate's checks, from the `gate_checks` tag (JSON list); [] when the gate never ran.

        Each: {"name": "production" | "mcnemar" | "reference" | "floor", "passed": bool, "skipped":
        bool, "detail": one line, and the check's figures (catdog.jobs.gate.Check.to_dict)}.
        """
        checks = _json_or(self.tags.get("gate_checks"), [])
        return [check for check in checks if isinstance(check, dict)] if isinstance(checks, list) else []

    def plot_names(self) -> list[str]:
        """File names of the version's plots (plots/*.png), from its `plots` tag, else its local folder."""
        if "plots" in self.tags:
            return [name for name in self.tags["plots"].split(",") if name]
        folder = self.model_dir / "plots"
        return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the `Version` object of GET /api/models (plots as /api/models/{v}/plots/{file name})."""
        metrics: dict[str, Any] = {key: self.metrics.get(key) for key in METRIC_KEYS}
        if metrics["n"] is not None:
            metrics["n"] = int(metrics["n"])
        counts = _json_or(self.tags.get("data_counts"), {})
        return {
            "version": self.version,
            "model_version": self.model_version,
            "backbone": self.backbone,
            "aliases": list(self.aliases),
            "created_at": self.created_at,
            "source": self.source,
            "metrics": metrics,
            "gate": {
                "verdict": self.tags.get("gate_verdict"),
                "reason": self.tags.get("gate_reason"),
                "checks": self.gate_checks(),
            },
            "parent_version": self.parent_version,
            "run_id": self.run_id,
            "data": {
                "digest": self.tags.get("data_digest"),
                "counts": counts if isinstance(counts, dict) else {},
                "uploads": _int_or_none(self.tags.get("data_uploads")) or 0,
            },
            "plots": {Path(name).stem: f"/api/models/{self.version}/plots/{name}" for name in self.plot_names()},
        }


def training_dataset(data: dict[str, Any], name: str, uploads: int = 0) -> dict[str, Any]:
    """The `dataset` of Registry.log_training_run from a model config's "data" entry.

    data: ModelConfig.data (root, fingerprint, counts); name: the dataset's name in MLflow;
    uploads: how many of its images are training uploads.
    """
    return {
        "name": name,
        "digest": str(data.get("fingerprint") or ""),
        "counts": data.get("counts") or {},
        "uploads": uploads,
        "root": str(data.get("root") or ""),
    }


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _json_or(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
