from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from catdog.ml.evaluate import compute_metrics, evaluate_model
from catdog.settings import get_settings

from ..conftest import CATSDOGS

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7])


def test_metrics_on_a_known_example() -> None:
    m = compute_metrics(Y, P)
    # by hand: predicted [0,0,1,0,1,1,0,1] -> TP=3, FP=1, FN=1, TN=3
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["roc_auc"] == pytest.approx(14 / 16)  # 14 of the 16 (dog, cat) pairs are ordered right
    assert m["n"] == 8


def test_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.25, 200), 0, 1)
    m = compute_metrics(y, p, threshold=0.5)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert m["classification_report"]["dog"]["recall"] == pytest.approx(skm.recall_score(y, pred))


def test_one_class_has_no_roc_auc_and_mismatched_input_is_refused() -> None:
    assert compute_metrics(np.ones(3), np.array([0.9, 0.8, 0.2]))["roc_auc"] is None
    with pytest.raises(ValueError):
        compute_metrics(np.ones(3), np.ones(2))


def test_evaluate_model_writes_every_plot(lite0_model: Path, tmp_path: Path) -> None:
    metrics = evaluate_model(
        lite0_model,
        CATSDOGS,
        settings=get_settings(),
        plots_dir=tmp_path / "plots",
        history=[{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "train_accuracy": 0.8, "val_accuracy": 0.9}],
        progress=False,
    )
    assert metrics["n"] == 12
    assert 0.0 <= metrics["accuracy"] <= 1.0
    for name in ("confusion_matrix.png", "roc_curve.png", "worst_mistakes.png", "training_curves.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_graph_precision_has_its_own_evaluation_file(tmp_path: Path) -> None:
    from catdog.ml.artifacts import metrics_path, served_metrics_path

    assert metrics_path(tmp_path, "fp32").name == "metrics.json"
    assert metrics_path(tmp_path, "int8").name == "metrics_int8.json"
    assert served_metrics_path(tmp_path, "int8") is None
    metrics_path(tmp_path, "fp32").write_text("{}")
    assert served_metrics_path(tmp_path, "int8") == tmp_path / "metrics.json"  # the other graph's, as a fallback
    metrics_path(tmp_path, "int8").write_text("{}")
    assert served_metrics_path(tmp_path, "int8") == tmp_path / "metrics_int8.json"
    assert served_metrics_path(tmp_path, "fp32") == tmp_path / "metrics.json"


def test_evaluation_on_cached_features_equals_the_served_graph(lite0_model: Path, tmp_path: Path) -> None:
    """The retrain job's evaluation (cached backbone features + the head graph) gives the served graph's figures."""
    from catdog.ml.evaluate import evaluate_on_features

    settings = get_settings()
    served = evaluate_model(lite0_model, CATSDOGS, settings=settings, progress=False, precision="fp32")
    cached, same = evaluate_on_features(
        lite0_model, CATSDOGS, settings=settings, compare_with=lite0_model, plots_dir=tmp_path / "plots"
    )
    for key in ("accuracy", "precision", "recall", "f1", "n", "confusion_matrix"):
        assert cached[key] == served[key], key
    assert abs(cached["roc_auc"] - served["roc_auc"]) < 1e-9 and abs(cached["log_loss"] - served["log_loss"]) < 1e-4
    assert same is not None and same["accuracy"] == cached["accuracy"]  # the gate's comparison: same head, same figure
    assert (tmp_path / "plots" / "roc_curve.png").is_file()


def test_paired_predictions_of_several_heads_on_the_same_features(lite0_model: Path, tmp_path: Path) -> None:
    """What McNemar's test in the promotion gate reads: per-image predicted classes, same images, same order."""
    import json
    import shutil

    from catdog.ml.evaluate import evaluate_with_heads

    other = Path(shutil.copytree(lite0_model, tmp_path / "other"))
    config = json.loads((other / "model_config.json").read_text())
    (other / "model_config.json").write_text(json.dumps(config | {"backbone": "vgg16"}))
    paired = evaluate_with_heads(
        lite0_model, CATSDOGS, settings=get_settings(), others={"same": lite0_model, "other": other}
    )
    n = paired.metrics["n"]
    assert paired.labels.shape == (n,) and set(paired.predicted) == {"new", "same"}
    assert paired.predicted["new"].shape == (n,) and np.array_equal(paired.predicted["new"], paired.predicted["same"])
    assert np.mean(paired.predicted["new"] == paired.labels) == pytest.approx(paired.metrics["accuracy"])
    assert paired.compared["same"]["accuracy"] == paired.metrics["accuracy"]
    assert "other" not in paired.compared and "vgg16" in paired.skipped["other"]
