"""PNG plots of a model: confusion matrix, ROC curve, training curves, worst mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from catdog import CLASS_NAMES
from catdog.ml.data import Split
from catdog.ml.preprocessing import load_image


def _save(fig: Figure, path: Path) -> str:
    """Figures are drawn without pyplot, so importing this never changes a notebook's backend."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part.png")
    fig.savefig(part, dpi=110, bbox_inches="tight")
    part.replace(path)
    return path.name


def confusion_matrix_plot(matrix: list[list[int]], path: Path) -> str:
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                str(matrix[i][j]),
                ha="center",
                va="center",
                fontsize=14,
                color="white" if matrix[i][j] > top / 2 else "black",
            )
    ax.set_xticks([0, 1], [f"predicted {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES])
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def roc_plot(y_true: np.ndarray, p_dog: np.ndarray, auc: float | None, path: Path) -> str:
    fpr, tpr, _ = roc_curve(y_true, p_dog)
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    ax.plot(fpr, tpr, lw=2, label=f"ROC-AUC = {auc:.4f}" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set_xlabel("false positive rate (cats called dogs)")
    ax.set_ylabel("true positive rate (dogs found)")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def training_curves_plot(history: list[dict[str, Any]], path: Path) -> str:
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set_title("loss")
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    acc_ax.set_title("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend()
    return _save(fig, path)


def worst_mistakes_plot(split: Split, y_true: np.ndarray, p_dog: np.ndarray, path: Path, k: int = 12) -> str:
    """The k most confident wrong answers, with what the model said."""
    confidence_in_truth = np.where(y_true == 1, p_dog, 1 - p_dog)
    wrong = [i for i in np.argsort(confidence_in_truth) if confidence_in_truth[i] < 0.5][:k]
    cols = 4
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(cols * 2.4, rows * 2.6))
    axes = fig.subplots(rows, cols)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), wrong, strict=False):
        sample = split.samples[i]
        ax.imshow(load_image(sample.path, 160))
        ax.set_title(f"{sample.path.name}\ntrue {sample.class_name}, P(dog)={p_dog[i]:.2f}", fontsize=7)
    fig.suptitle(f"Worst mistakes ({len(wrong)} shown)" if wrong else "No mistakes")
    return _save(fig, path)


def evaluation_plots(
    folder: Path, split: Split, p_dog: np.ndarray, metrics: dict[str, Any], history: list[dict[str, Any]] | None = None
) -> list[str]:
    y_true = np.array(split.labels)
    names = [
        confusion_matrix_plot(metrics["confusion_matrix"], folder / "confusion_matrix.png"),
        roc_plot(y_true, p_dog, metrics["roc_auc"], folder / "roc_curve.png"),
        worst_mistakes_plot(split, y_true, p_dog, folder / "worst_mistakes.png"),
    ]
    if history:
        names.append(training_curves_plot(history, folder / "training_curves.png"))
    return names
