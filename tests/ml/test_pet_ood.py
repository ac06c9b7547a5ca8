"""The feature gate: k-NN distance to the training features, as a p-value (catdog.ml.pet_ood)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from catdog.ml.artifacts import DRIFT_REFERENCE_NPZ, ModelConfig
from catdog.ml.pet_ood import FeatureOODScorer
from catdog.ml.predictor import Predictor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _cluster(rng: np.random.Generator, n: int, centre: np.ndarray) -> np.ndarray:
    return (centre + 0.3 * rng.standard_normal((n, len(centre)))).astype(np.float32)


def test_photos_like_the_reference_get_about_uniform_p_values() -> None:
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(64)
    scorer = FeatureOODScorer.from_features(_cluster(rng, 400, centre), k=5, threshold=0.05)
    p = scorer(_cluster(rng, 4000, centre))
    assert ((p > 0) & (p <= 1)).all()
    for level in (0.05, 0.2, 0.5):  # P(p < level) is about level for exchangeable samples
        assert abs(float((p < level).mean()) - level) < 0.03, level


def test_far_away_features_get_tiny_p_values_that_fall_with_the_distance() -> None:
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(64)
    scorer = FeatureOODScorer.from_features(_cluster(rng, 60, centre), k=3)
    other = rng.standard_normal(64)
    near_other = _cluster(rng, 20, other)
    p_far = scorer(near_other)
    assert (p_far < 1 / 61).all()  # below the smallest conformal step of a 60-image reference
    halfway = scorer(_cluster(rng, 20, (centre + other) / 2))
    assert np.median(halfway) > np.median(p_far)


def test_the_scorer_is_monotone_in_the_distance() -> None:
    rng = np.random.default_rng(2)
    scorer = FeatureOODScorer.from_features(rng.standard_normal((100, 16)), k=2)
    distances = np.linspace(0, 2, 401)
    p = scorer.p_values(distances)
    assert (np.diff(p) <= 1e-12).all()


def test_too_few_reference_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="n > k"):
        FeatureOODScorer.from_features(np.ones((3, 8)), k=5)


def test_a_model_directory_without_a_drift_reference_has_no_feature_gate(model_copy: Path) -> None:
    (model_copy / DRIFT_REFERENCE_NPZ).unlink()
    predictor = Predictor(model_copy)
    assert predictor.pet_gate is None
    (answer,) = predictor.predict([FIXTURES / "pets" / "chelsea.jpg"])
    assert answer.is_pet is None and answer.pet_score is None


def test_the_older_imagenet_gate_still_serves_directories_that_name_it(model_copy: Path) -> None:
    config = ModelConfig.load(model_copy)
    config.pet_gate = {"file": "pet_gate.onnx", "threshold": 0.05}
    config.save(model_copy)
    predictor = Predictor(model_copy)
    assert predictor.pet_gate == "imagenet"
    cat, coffee = predictor.predict([FIXTURES / "pets" / "chelsea.jpg", FIXTURES / "nonpet" / "coffee.jpg"])
    assert cat.is_pet is True and coffee.is_pet is False


def test_new_models_use_the_feature_gate(lite0_model: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(lite0_model, tmp_path / "m"))
    assert ModelConfig.load(copy).pet_gate["method"] == "knn"
    assert Predictor(copy).pet_gate == "features"
