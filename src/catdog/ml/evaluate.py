"""Honest evaluation: every metric from the served graph's own probabilities on held-out data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import metrics as skm

from catdog import CLASS_NAMES
from catdog.ml.data import DataError, Split, load_split, resolve_split
from catdog.ml.predictor import Predictor

if TYPE_CHECKING:
    from catdog.settings import Settings

# log loss clips probabilities away from 0 and 1 so one confident mistake cannot make it infinite
EPS = 1e-7


def compute_metrics(y_true: np.ndarray, p_dog: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Classification metrics with "dog" as the positive class."""
    y_true = np.asarray(y_true, dtype=int)
    p_dog = np.asarray(p_dog, dtype=np.float64)
    if len(y_true) == 0 or len(y_true) != len(p_dog):
        raise ValueError("need one probability per label, and at least one label")
    y_pred = (p_dog >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n": len(y_true),
        "threshold": threshold,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, p_dog)) if both_classes else None,
        "log_loss": float(skm.log_loss(y_true, np.clip(p_dog, EPS, 1 - EPS), labels=[0, 1])),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "classification_report": skm.classification_report(
            y_true, y_pred, labels=[0, 1], target_names=list(CLASS_NAMES), output_dict=True, zero_division=0
        ),
    }


def evaluate_split(predictor: Predictor, split: Split, progress: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    p_dog = predictor.probabilities([s.path for s in split.samples], progress=progress)
    metrics = compute_metrics(np.array(split.labels), p_dog, predictor.threshold)
    metrics["data"] = {"root": str(split.root), "fingerprint": split.fingerprint(), "skipped": len(split.skipped)}
    return metrics, p_dog


def evaluate_on_features(
    model_dir: Path,
    data_dir: Path,
    *,
    settings: Settings,
    plots_dir: Path | None = None,
    history: list[dict[str, Any]] | None = None,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    compare_with: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Evaluate a model on DIR/test from cached backbone features: (metrics, compare_with's metrics or None).

    The served graph is the backbone graph followed by the head graph, so P(dog) is the head's
    ONNX graph (catdog.ml.drift.head_probabilities) on the pooled features of the backbone graph
    at the model's precision, read from the feature cache where present: a retrain pays backbone
    passes only for test images never seen. compare_with: another model directory with the same
    backbone, its head evaluated on the very same features (the promotion gate's comparison: both
    heads on the graph this machine runs, whatever precision each head was trained with); None is
    returned for it when its backbone differs. Raises DataError when DIR
    has no readable test images. evaluate_with_heads does the same for several heads and keeps
    every head's per-image predictions. settings: where the backbone weights and the feature
    cache are and how many threads run (weights_dir, features_dir, threads).
    """
    others = {"other": Path(compare_with)} if compare_with is not None else {}
    paired = evaluate_with_heads(
        model_dir,
        data_dir,
        settings=settings,
        others=others,
        plots_dir=plots_dir,
        history=history,
        progress=progress,
        on_batch=on_batch,
    )
    return paired.metrics, paired.compared.get("other")


@dataclass(frozen=True)
class PairedEvaluation:
    """A model's test metrics plus per-image predictions of it and of other heads on the same test features.

    metrics: the model's metrics (as evaluate_on_features returns them). labels: (N,) int64 true
    classes (0 cat, 1 dog) of the N readable test images, in load_split's order. predicted: name ->
    (N,) int8 predicted class (P(dog) >= that model's threshold) on those images: "new" for the model,
    and each compared head whose backbone matches. compared: name -> metrics of each such head.
    skipped: name -> why a compared head was not evaluated (another backbone).
    """

    metrics: dict[str, Any]
    labels: np.ndarray
    predicted: dict[str, np.ndarray]
    compared: dict[str, dict[str, Any]]
    skipped: dict[str, str]


def evaluate_with_heads(
    model_dir: Path,
    data_dir: Path,
    *,
    settings: Settings,
    others: Mapping[str, Path] | None = None,
    plots_dir: Path | None = None,
    history: list[dict[str, Any]] | None = None,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> PairedEvaluation:
    """evaluate_on_features for the model, plus every head of `others` (name -> model directory) on the same features.

    The features are computed (or read from the cache) once, with the model's backbone graph; a
    head of another backbone cannot run on them and is listed in `skipped` instead. The paired
    predictions are what McNemar's test in catdog.jobs.gate needs. Raises DataError when DIR has
    no readable test images. settings: weights_dir, features_dir and threads (as evaluate_on_features).
    """
    from catdog.ml.artifacts import ModelConfig
    from catdog.ml.drift import head_probabilities, reference_graphs
    from catdog.ml.features import pooled_features
    from catdog.ml.preprocessing import Normalization

    config = ModelConfig.load(Path(model_dir))
    split = load_split(resolve_split(data_dir, "test"))
    if not split.samples:
        raise DataError(f"no readable images in {split.root}")
    graphs = reference_graphs(Path(model_dir), settings.weights_dir)
    precision = config.precision if config.precision in graphs else "fp32"
    features, digest = pooled_features(
        config.backbone,
        graphs[precision],
        Normalization.from_dict(config.normalization),
        split.samples,
        features_dir=settings.features_dir,
        threads=settings.threads,
        progress=progress,
        desc="test split features",
        on_batch=on_batch,
    )
    labels = np.array(split.labels, dtype=np.int64)
    p_dog = head_probabilities(Path(model_dir), features).astype(np.float64)
    metrics = compute_metrics(labels, p_dog, float(config.threshold))
    metrics["data"] = {"root": str(split.root), "fingerprint": split.fingerprint(), "skipped": len(split.skipped)}
    metrics["model"] = {
        "backbone": config.backbone,
        "precision": precision,
        "trained_precision": config.precision,
        "evaluated_on": f"cached backbone features (graph {digest}) + the head graph",
    }
    if plots_dir is not None:
        from catdog.ml import plots

        metrics["plots"] = plots.evaluation_plots(plots_dir, split, p_dog, metrics, history)
    predicted = {"new": (p_dog >= float(config.threshold)).astype(np.int8)}
    compared: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, other_dir in (others or {}).items():
        other_config = ModelConfig.load(Path(other_dir))
        if other_config.backbone != config.backbone:
            skipped[name] = f"backbone {other_config.backbone}, not {config.backbone}: no shared features"
            continue
        # its head on the features this machine serves it with
        other_p = head_probabilities(Path(other_dir), features).astype(np.float64)
        compared[name] = compute_metrics(labels, other_p, float(other_config.threshold))
        predicted[name] = (other_p >= float(other_config.threshold)).astype(np.int8)
    return PairedEvaluation(metrics, labels, predicted, compared, skipped)


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    *,
    settings: Settings,
    plots_dir: Path | None = None,
    history: list[dict[str, Any]] | None = None,
    progress: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """Evaluate the served graph on DIR/test (or DIR itself when it holds cats/ and dogs/).

    precision: "auto", "fp32" or "int8" (default: settings.precision, the CATDOG_PRECISION setting); the
    metrics' "model" entry records the precision that ran and the one the head was trained on.
    plots_dir: where the plots go; an int8 run draws them only when the folder has none yet, so
    the plots of a model stay those of its fp32 graph (the two differ by a few images at most).
    """
    split = load_split(resolve_split(data_dir, "test"))
    if not split.samples:
        raise DataError(f"no readable images in {split.root}")
    predictor = Predictor(model_dir, precision=precision or settings.precision, cache_dir=settings.cache_dir)
    metrics, p_dog = evaluate_split(predictor, split, progress)
    metrics["model"] = {
        "backbone": predictor.config.backbone,
        "version": predictor.version,
        "precision": predictor.precision,
        "trained_precision": predictor.config.precision,
    }
    if plots_dir is not None and (predictor.precision == "fp32" or not any(Path(plots_dir).glob("*.png"))):
        from catdog.ml import plots

        metrics["plots"] = plots.evaluation_plots(plots_dir, split, p_dog, metrics, history)
    return metrics
