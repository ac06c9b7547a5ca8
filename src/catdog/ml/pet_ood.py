"""Is it a cat or a dog at all? An out-of-distribution score from the served backbone's own features.

A binary head calls a photo of a car a confident dog, so every prediction also says whether the
picture looks like the photos the model was trained on. The score needs no second network: the
served graph already outputs the pooled backbone features the head reads, and the model
directory already keeps a seeded sample of the base training set's features (the drift
reference, `drift_reference.npz`, 512 images). For an image with features x:

1. distance s(x) = cosine distance from x to its k-th nearest neighbour among the reference's
   features (k-NN OOD detection on normalised features: Sun, Ming, Zhu & Li, "Out-of-Distribution
   Detection with Deep Nearest Neighbors", ICML 2022);
2. pet_score(x) = (1 + #{i : s_i >= s(x)}) / (n + 1), the conformal p-value of s(x) among the
   leave-one-out distances s_i of the n reference images themselves (Vovk, Gammerman & Shafer,
   "Algorithmic Learning in a Random World", 2005), in the bulk; in the upper tail (above the
   m-th largest s_i, m = max(5, n / 10)) the empirical steps are replaced by an exponential tail
   fitted to the excesses over that point, p = (m + 1) / (n + 1) * exp(-(s - u) / mean excess)
   (peaks over threshold: Pickands 1975; Davison & Smith 1990), so small p-values are smooth
   and reachable below 1 / (n + 1) even for a small reference.

So pet_score is in (0, 1], about uniform over photos like the training set's and near 0 for
pictures far from every training photo; `is_pet = pet_score >= threshold` flags about a
`threshold` share of pet photos by construction, whatever the backbone, which is why one default
threshold serves every model version. `bench/pet_gate.py` measures both error rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catdog.ml.artifacts import DRIFT_REFERENCE_NPZ

METHOD = "knn"
DEFAULT_K = 5
DEFAULT_THRESHOLD = 0.003


@dataclass(frozen=True)
class FeatureOODScorer:
    """pooled features (N, C) -> pet_score (N,) float64 in (0, 1] (see the module docstring).

    reference: (n, C) float32, the training sample's features, each row scaled to unit length;
    calibration: (n,) float64, sorted leave-one-out k-NN distances of the reference rows.
    Thread-safe (never mutated).
    """

    reference: np.ndarray
    calibration: np.ndarray
    k: int
    threshold: float

    @classmethod
    def from_features(
        cls, features: np.ndarray, k: int = DEFAULT_K, threshold: float = DEFAULT_THRESHOLD
    ) -> FeatureOODScorer:
        """Fit on a training sample: features (n, C), n > k. Raises ValueError on too few rows or a bad k."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or k < 1 or len(features) <= k:
            raise ValueError(f"need (n, C) features with n > k >= 1, got {features.shape} and k={k}")
        reference = _unit(features)
        distances = 1.0 - reference @ reference.T
        np.fill_diagonal(distances, np.inf)  # leave each row out of its own neighbours
        calibration = np.sort(np.partition(distances, k - 1, axis=1)[:, k - 1].astype(np.float64))
        return cls(reference, calibration, k, threshold)

    @classmethod
    def from_model_dir(cls, model_dir: Path, precision: str, config: dict[str, Any]) -> FeatureOODScorer | None:
        """The scorer of a model directory's drift reference (the served precision's features, else fp32).

        config: model_config.json's "pet_gate" ({"method": "knn", "k": int, "threshold": float}).
        None when the directory has no drift reference or it holds no training features.
        """
        path = Path(model_dir) / DRIFT_REFERENCE_NPZ
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as npz:
            key = next((f"features_train_{p}" for p in (precision, "fp32") if f"features_train_{p}" in npz.files), None)
            if key is None:
                return None
            features = np.asarray(npz[key], np.float32)
        return cls.from_features(
            features, int(config.get("k", DEFAULT_K)), float(config.get("threshold", DEFAULT_THRESHOLD))
        )

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, C) -> (N,) float64 cosine distance to the k-th nearest reference row."""
        similarity = _unit(np.asarray(features, np.float32)) @ self.reference.T
        kth = np.partition(-similarity, self.k - 1, axis=1)[:, self.k - 1]  # k-th largest similarity, negated
        return (1.0 + kth).astype(np.float64)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(N, C) pooled features -> pet_score (N,) float64 in (0, 1]."""
        return self.p_values(self.distances(features))

    def p_values(self, distances: np.ndarray) -> np.ndarray:
        """k-NN distances (N,) -> p-values (N,) float64 in (0, 1]: conformal, with the fitted exponential tail."""
        distances = np.asarray(distances, np.float64)
        calibration = self.calibration
        n = len(calibration)
        m = min(n - 1, max(5, n // 10))
        u = calibration[n - m - 1]  # m calibration distances lie above u
        excess = float(np.mean(calibration[n - m :] - u))
        at_least = n - np.searchsorted(calibration, distances, side="left")  # #{s_i >= s(x)}
        bulk = (1.0 + at_least) / (n + 1.0)
        tail = (m + 1.0) / (n + 1.0) * np.exp(-(distances - u) / max(excess, 1e-12))
        return np.where(distances > u, tail, bulk)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
