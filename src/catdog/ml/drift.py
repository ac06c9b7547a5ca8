"""Drift of a served model, as the monitoring tools users know compute it (Evidently's defaults).

Two checks on a window of recent predictions, each against a reference stored with the model
(`drift_reference.npz`, written by `catdog train` and `catdog reference`):

- prediction drift: recent P(dog) against the model's P(dog) on the test split. Drift when the
  two-sample Kolmogorov-Smirnov test gives p < 0.05 (scipy.stats.ks_2samp; Evidently's default
  test for a numerical column of up to 1000 rows) or when the Population Stability Index
  exceeds 0.1 (Evidently's PSI threshold).
- feature drift: pooled backbone features of recent images against those of a sample of the
  training images. A domain classifier learns to tell the two apart; drift when its
  cross-validated ROC-AUC exceeds 0.55 (Evidently's embeddings drift, method "model").

Small windows make both figures noisy, and a fixed threshold then fires by chance. Under no
drift, PSI over 10 bins averages about (1/n + 1/m) * 9 (Yurdakul 2018): 0.19 for a window of 50
against 1,623 test predictions, so PSI > 0.1 fired in 80% of such no-drift windows (simulated).
A domain classifier's AUC on 50 recent against 512 reference vectors spreads +-0.05 around 0.5:
a fixed 0.55 fired in 17% of no-drift windows of EfficientNet-Lite0 features (test split against
itself). So each threshold is the larger of Evidently's default and the 95th percentile of the
statistic under no drift, found by permutation (Evidently's `bootstrap=True` idea): PSI of
1,000 random splits of the pooled P(dog) values, and the AUC of the classifier refitted under
1,000 permuted domain labels. Measured false alarms at a nominal 5%: 3% (AUC, 100 windows of
50) and 6.5% / 4% (PSI, 200 windows of 50 / 100). At the window the server keeps (500) the
defaults are what applies: the no-drift 95th percentiles are about 0.03 (PSI) and 0.535 (AUC).
Everything is deterministic for a given input (seeded).

Windows smaller than `MIN_SAMPLES` give `drift: None` and a reason instead of a number.
This module needs NumPy, SciPy and scikit-learn only; `build_reference` (which runs the
backbone) imports the training-side modules when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from catdog.errors import UsageProblem
from catdog.ml.artifacts import DRIFT_REFERENCE_NPZ
from catdog.timefmt import iso_utc

if TYPE_CHECKING:
    from catdog.ml.data import Split
    from catdog.settings import Settings

REFERENCE_FORMAT = 1
REFERENCE_SAMPLE = 512  # training images whose features are the feature-drift reference
REFERENCE_SEED = 0
MIN_SAMPLES = 50  # smallest window that gets a verdict (CATDOG_DRIFT_MIN_SAMPLES' default)

# prediction drift
KS_P_VALUE = 0.05  # drift when p < this (Evidently's default for K-S)
PSI_THRESHOLD = 0.1  # drift when PSI > this (Evidently's default for PSI)
PSI_BINS = 10  # at the reference's deciles (Siddiqi 2006; Yurdakul 2018)
PSI_EPSILON = 1e-4  # stands in for an empty bin's share (Evidently fills empty bins with 0.0001)
P_DECIMALS = 6  # both sides compared at the resolution predictions are reported in
# feature drift
AUC_THRESHOLD = 0.55  # drift when ROC-AUC > this (Evidently's embeddings "model" method)
NULL_QUANTILE = 0.95
PERMUTATIONS = 1000
FOLDS = 5
PCA_COMPONENTS = 32
RIDGE = 1.0  # L2 penalty of the domain classifier, on whitened components

KS_TEST = "two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) of P(dog), recent vs test split"
PSI_TEST = f"Population Stability Index of P(dog), {PSI_BINS} bins at the test split's deciles"
DOMAIN_TEST = (
    f"domain classifier ROC-AUC, recent vs training-image features ({FOLDS}-fold cross-validated; "
    f"standardize, PCA to {PCA_COMPONENTS} whitened components, ridge linear discriminant)"
)


class DriftReferenceError(UsageProblem):
    """A model directory's drift reference is missing or unreadable."""


# --- prediction drift --------------------------------------------------------------------------
def population_stability_index(
    reference: np.ndarray, recent: np.ndarray, bins: int = PSI_BINS, epsilon: float = PSI_EPSILON
) -> tuple[float, int]:
    """(PSI, number of bins) of two 1-D samples, binned at the reference's quantiles.

    PSI = sum over bins of (a - e) * ln(a / e), e and a the reference's and the recent sample's
    share of the bin (Siddiqi, "Credit Risk Scorecards", 2006; the formula Evidently uses).
    Bins: `bins` equal-count bins of the reference, edges at its quantiles (numpy's linear
    rule); bin i holds edge[i-1] < x <= edge[i]. Tied edges leave empty bins that add nothing,
    so the bins counted are the distinct edges + 1. An empty bin's share becomes `epsilon`.
    Raises ValueError on an empty sample.
    """
    reference, recent = np.asarray(reference, np.float64), np.asarray(recent, np.float64)
    if reference.ndim != 1 or recent.ndim != 1 or reference.size == 0 or recent.size == 0:
        raise ValueError("PSI needs two non-empty 1-D samples")
    psi, edges = _psi_rows(reference[None, :], recent[None, :], bins, epsilon)
    return float(psi[0]), len(np.unique(edges[0])) + 1


def _psi_rows(
    reference: np.ndarray, recent: np.ndarray, bins: int = PSI_BINS, epsilon: float = PSI_EPSILON
) -> tuple[np.ndarray, np.ndarray]:
    """(PSI (R,), edges (R, bins - 1)) of each row of reference (R, n) against the same row of recent (R, m)."""
    n = reference.shape[1]
    position = np.linspace(0, 1, bins + 1)[1:-1] * (n - 1)
    low = np.floor(position).astype(int)
    high, fraction = np.minimum(low + 1, n - 1), position - low
    ordered = np.sort(reference, axis=1)
    below, above = ordered[:, low], ordered[:, high]
    # numpy's linear quantile, to the last bit: a + (b - a) t, or b - (b - a)(1 - t) from t = 0.5
    edges = np.where(fraction < 0.5, below + (above - below) * fraction, above - (above - below) * (1 - fraction))

    def shares(values: np.ndarray) -> np.ndarray:
        at_or_below = (values[:, :, None] <= edges[:, None, :]).sum(axis=1)  # (R, bins - 1)
        cumulative = np.column_stack([np.zeros(len(values)), at_or_below, np.full(len(values), values.shape[1])])
        share = np.diff(cumulative, axis=1) / values.shape[1]
        return np.where(share == 0, epsilon, share)

    expected, actual = shares(reference), shares(recent)
    return np.sum((actual - expected) * np.log(actual / expected), axis=1), edges


def psi_null_quantile(
    reference: np.ndarray, recent: np.ndarray, seed: int = 0, quantile: float = NULL_QUANTILE
) -> float:
    """The `quantile` of PSI when reference and recent come from one distribution (a permutation test).

    PSI of 1,000 random splits of the pooled values into groups of the two sizes, binned as
    `population_stability_index` bins. Small windows need it: under no drift PSI averages about
    (1/n + 1/m) * (bins - 1) (Yurdakul, "Statistical properties of the population stability
    index", 2018), and an empty recent bin alone adds 0.69 (its share is taken as 0.0001).
    """
    pooled = np.concatenate([np.asarray(reference, np.float64), np.asarray(recent, np.float64)])
    shuffled = np.random.default_rng(seed).permuted(np.tile(pooled, (PERMUTATIONS, 1)), axis=1)
    values, _ = _psi_rows(shuffled[:, : len(reference)], shuffled[:, len(reference) :])
    return float(np.quantile(values, quantile))


def prediction_drift(reference_p: np.ndarray, recent_p: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Whether recent P(dog) drifted from the reference's (the model's P(dog) on the test split).

    reference_p (n,), recent_p (m,): probabilities in [0, 1], any float dtype; both are rounded
    to 6 decimals first, the resolution predictions are reported in (without it, values below
    5e-7 reported as 0.0 would differ from an unrounded reference). Drift when the K-S p-value
    < 0.05 or PSI > max(0.1, the 95th percentile of PSI under no drift) (see the module doc).
    Returns the figures, the thresholds applied, `drift`, `drift_by` (which tests fired),
    `n_reference`, `n_recent` and a one-line `summary`. Raises ValueError on empty, non-finite
    or out-of-range input.
    """
    reference, recent = _probabilities(reference_p, "reference_p"), _probabilities(recent_p, "recent_p")
    ks = stats.ks_2samp(reference, recent)
    psi, n_bins = population_stability_index(reference, recent)
    psi_null = psi_null_quantile(reference, recent, seed)
    psi_threshold = max(PSI_THRESHOLD, psi_null)
    p_value = float(ks.pvalue)
    drift_by = [name for name, fired in (("ks", p_value < KS_P_VALUE), ("psi", psi > psi_threshold)) if fired]
    return {
        **_prediction_fields(len(reference), len(recent)),
        "drift": bool(drift_by),
        "drift_by": drift_by,
        "ks_statistic": float(ks.statistic),
        "ks_p_value": p_value,
        "psi": psi,
        "psi_bins": n_bins,
        "psi_null_q95": psi_null,
        "psi_threshold": psi_threshold,
        "summary": (
            f"K-S p-value {p_value:.3g} (drift if < {KS_P_VALUE}); PSI {psi:.3f} (drift if > {psi_threshold:.3f}"
            f" = max({PSI_THRESHOLD}, no-drift 95th percentile {psi_null:.3f})): "
            + (f"drift ({', '.join(drift_by)})" if drift_by else "no drift")
        ),
    }


def _probabilities(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return np.round(array, P_DECIMALS)


def _prediction_fields(n_reference: int, n_recent: int) -> dict[str, Any]:
    """Every key of a prediction-drift result, with the thresholds and no figures yet."""
    return {
        "test": f"{KS_TEST}; {PSI_TEST}",
        "drift": None,
        "reason": None,
        "drift_by": [],
        "n_reference": n_reference,
        "n_recent": n_recent,
        "ks_statistic": None,
        "ks_p_value": None,
        "ks_p_value_threshold": KS_P_VALUE,
        "psi": None,
        "psi_bins": None,
        "psi_null_q95": None,
        "psi_threshold": None,
        "psi_threshold_default": PSI_THRESHOLD,
        "summary": None,
    }


# --- feature drift -----------------------------------------------------------------------------
def feature_drift(reference_features: np.ndarray, recent_features: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Whether recent features drifted from the reference's, by a domain classifier.

    reference_features (n, C), recent_features (m, C): pooled backbone features, any float
    dtype. The classifier labels reference 0 and recent 1: features standardized, reduced by
    PCA to 32 whitened components (fitted on both sets, without labels), then a linear
    discriminant fitted by ridge least squares; its out-of-fold scores from 5-fold stratified
    cross-validation give the ROC-AUC (class sizes may differ: AUC does not depend on them).
    Drift when AUC > max(0.55, the 95th percentile of the AUC when the classifier is refitted
    under 1,000 random permutations of the domain labels). A least-squares classifier's
    out-of-fold scores are linear in the labels, so all refits cost one matrix product and the
    permutation test is exact: it fired in 3 of 100 no-drift windows of 50 (Lite0 features of
    the test split against themselves), where a cross-validated logistic regression with
    labels permuted over its fixed scores (Evidently's shortcut) fired in 8% (of 150).
    Deterministic for a given input and seed. Needs at least 5 rows on each side. Returns the
    AUC, the thresholds, a permutation p-value, `drift`, the sizes and a `summary`; raises
    ValueError on bad shapes or non-finite values.
    """
    reference, recent = _feature_matrix(reference_features, "reference"), _feature_matrix(recent_features, "recent")
    if reference.shape[1] != recent.shape[1]:
        raise ValueError(f"feature sizes differ: reference {reference.shape[1]}, recent {recent.shape[1]}")
    if min(len(reference), len(recent)) < FOLDS:
        raise ValueError(f"the domain classifier needs at least {FOLDS} rows on each side")
    x, labels = _components(reference, recent, seed), np.r_[np.zeros(len(reference)), np.ones(len(recent))]
    rng = np.random.default_rng(seed)
    label_sets = np.column_stack([labels, rng.permuted(np.tile(labels[:, None], (1, PERMUTATIONS)), axis=0)])
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, labels)
    aucs = _auc_columns(_out_of_fold_scores(x, label_sets, folds), label_sets)
    auc, null = float(aucs[0]), aucs[1:]
    null_q = float(np.quantile(null, NULL_QUANTILE))
    threshold = max(AUC_THRESHOLD, null_q)
    drift = auc > threshold
    return {
        **_feature_fields(len(reference), len(recent)),
        "drift": bool(drift),
        "roc_auc": auc,
        "auc_null_q95": null_q,
        "auc_threshold": threshold,
        "p_value": float((1 + np.sum(null >= auc)) / (1 + len(null))),
        "summary": (
            f"domain classifier ROC-AUC {auc:.3f} (drift if > {threshold:.3f} = max({AUC_THRESHOLD}, "
            f"permuted-label 95th percentile {null_q:.3f})): " + ("drift" if drift else "no drift")
        ),
    }


def _feature_matrix(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, np.float64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{name} features must be a 2-D array (rows, channels), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} features hold non-finite values")
    return array


def _feature_fields(n_reference: int, n_recent: int) -> dict[str, Any]:
    """Every key of a feature-drift result, with the thresholds and no figures yet."""
    return {
        "test": DOMAIN_TEST,
        "drift": None,
        "reason": None,
        "n_reference": n_reference,
        "n_recent": n_recent,
        "roc_auc": None,
        "auc_null_q95": None,
        "auc_threshold": None,
        "auc_threshold_default": AUC_THRESHOLD,
        "permutations": PERMUTATIONS,
        "p_value": None,
        "summary": None,
    }


def _components(reference: np.ndarray, recent: np.ndarray, seed: int) -> np.ndarray:
    """Both sets standardized, projected on their leading principal components, each scaled to unit variance."""
    x = StandardScaler().fit_transform(np.vstack([reference, recent]))
    n_components = min(PCA_COMPONENTS, x.shape[0] - 1, x.shape[1])
    z = PCA(n_components, svd_solver="auto", random_state=seed).fit_transform(x)
    spread = z.std(axis=0)
    keep = spread > 1e-9 * max(float(spread.max()), 1e-300)
    return np.asarray(z[:, keep] / spread[keep])


def _out_of_fold_scores(x: np.ndarray, label_sets: np.ndarray, folds: Any) -> np.ndarray:
    """(N, L) out-of-fold scores of a ridge least-squares classifier, one column per label set (N, L)."""
    design = np.column_stack([np.ones(len(x)), x])
    penalty = RIDGE * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    scores = np.zeros(label_sets.shape)
    for train, test in folds:
        fitted = design[train]
        coefficients = np.linalg.solve(fitted.T @ fitted + penalty, fitted.T @ label_sets[train])
        scores[test] = design[test] @ coefficients
    return scores


def _auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column of scores (N, L) against the 0/1 labels in the same column (Mann-Whitney U)."""
    ranks = stats.rankdata(scores, axis=0)
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    return np.asarray(((ranks * labels).sum(axis=0) - positives * (positives + 1) / 2) / (positives * negatives))


# --- the reference -----------------------------------------------------------------------------
@dataclass
class DriftReference:
    """What drift is measured against, stored as `drift_reference.npz` in a model directory.

    features_train: precision ("fp32", "int8") -> (k, C) pooled backbone features of a seeded
    sample of up to 512 distinct training images, from the feature graph of that precision
    (int8 features differ slightly from fp32 ones, and a domain classifier could flag the
    quantization itself), stored as float16. p_dog_test: (n,) float32, the model's P(dog) on
    the test split, or None when the data had no test split. meta: where it all came from
    (data fingerprints, sample rule and seed, graph digests, creation time, notes).
    """

    features_train: dict[str, np.ndarray]
    p_dog_test: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def features(self, precision: str) -> np.ndarray | None:
        """(k, C) float32 training features of one precision, or None when not recorded."""
        found = self.features_train.get(precision)
        return None if found is None else np.asarray(found, np.float32)

    def save(self, model_dir: Path) -> Path:
        """Write `model_dir/drift_reference.npz` atomically (compressed); returns its path."""
        arrays: dict[str, Any] = {
            f"features_train_{precision}": np.asarray(values, np.float16)
            for precision, values in self.features_train.items()
        }
        if self.p_dog_test is not None:
            arrays["p_dog_test"] = np.asarray(self.p_dog_test, np.float32)
        arrays["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        path = Path(model_dir) / DRIFT_REFERENCE_NPZ
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, model_dir: Path) -> DriftReference:
        """Read `model_dir/drift_reference.npz` (or the .npz file itself).

        Raises DriftReferenceError (a ValueError) when it is missing or unreadable.
        """
        path = Path(model_dir)
        path = path if path.suffix == ".npz" else path / DRIFT_REFERENCE_NPZ
        if not path.is_file():
            raise DriftReferenceError(
                f"no {DRIFT_REFERENCE_NPZ} in {path.parent}: write it with `catdog reference --model DIR --data DATA`"
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                features = {
                    key.removeprefix("features_train_"): npz[key]
                    for key in npz.files
                    if key.startswith("features_train_")
                }
                p_dog = np.asarray(npz["p_dog_test"], np.float32) if "p_dog_test" in npz.files else None
                meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DriftReferenceError(f"{path} is not a readable drift reference: {exc}") from exc
        return cls(features_train=features, p_dog_test=p_dog, meta=meta)


# --- both checks on a window -------------------------------------------------------------------
@dataclass(frozen=True)
class DriftReport:
    """One drift check of a window of recent predictions.

    drift: True when either check fired, False when at least one ran and none fired, None when
    neither could run. prediction, feature: each check's figures, test name, thresholds and
    `summary` (or `drift: None` and a `reason`). values: the headline figure of each test by
    name (ks_statistic, ks_p_value, psi, domain_auc; None where not computed). window_size:
    recent predictions in the window. precision: the graph precision of the recent features.
    seconds: time spent computing.
    """

    drift: bool | None
    prediction: dict[str, Any]
    feature: dict[str, Any]
    values: dict[str, float | None]
    window_size: int
    precision: str
    min_samples: int
    seconds: float
    computed_at: str
    summary: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (plain floats, ints, strings, lists, None)."""
        return asdict(self)


def compute_drift(
    reference: DriftReference,
    recent_p: np.ndarray | Sequence[float] | None,
    recent_features: np.ndarray | None,
    precision: str,
    *,
    min_samples: int = MIN_SAMPLES,
    seed: int = 0,
) -> DriftReport:
    """Both checks of a window against a reference; never raises for a window too small or missing.

    recent_p (m,): recent P(dog); recent_features (m', C): their pooled backbone features from
    the graph of `precision` ("fp32" or "int8"), compared with the reference's features of the
    same precision (cast to the reference's stored dtype first, so storage rounding is never
    what differs). A check whose window has fewer than `min_samples` rows, or whose reference
    part is missing, gives `drift: None` and a `reason`. Raises ValueError only on malformed
    input (values out of range, mismatched feature sizes).
    """
    started = time.perf_counter()
    p = np.zeros(0) if recent_p is None else np.asarray(recent_p, np.float64).reshape(-1)
    prediction = _prediction_check(reference, p, min_samples)
    feature = _feature_check(reference, recent_features, precision, min_samples, seed)
    checked = [part["drift"] for part in (prediction, feature) if part["drift"] is not None]
    drift = None if not checked else any(checked)
    values: dict[str, float | None] = {
        "ks_statistic": prediction["ks_statistic"],
        "ks_p_value": prediction["ks_p_value"],
        "psi": prediction["psi"],
        "domain_auc": feature["roc_auc"],
    }
    return DriftReport(
        drift=drift,
        prediction=prediction,
        feature=feature,
        values=values,
        window_size=len(p),
        precision=precision,
        min_samples=min_samples,
        seconds=round(time.perf_counter() - started, 4),
        computed_at=iso_utc(),
        summary=_overall_summary(drift, prediction, feature),
    )


def _prediction_check(reference: DriftReference, recent_p: np.ndarray, min_samples: int) -> dict[str, Any]:
    n_reference = 0 if reference.p_dog_test is None else len(reference.p_dog_test)
    reason = None
    if reference.p_dog_test is None or n_reference == 0:
        reason = "the reference has no test-split predictions (its data had no test split)"
    elif len(recent_p) < min_samples:
        reason = f"window too small: {len(recent_p)} predictions, the check needs at least {min_samples}"
    if reason is not None:
        return {**_prediction_fields(n_reference, len(recent_p)), "reason": reason, "summary": f"no verdict: {reason}"}
    assert reference.p_dog_test is not None
    return prediction_drift(reference.p_dog_test, recent_p)


def _feature_check(
    reference: DriftReference, recent: np.ndarray | None, precision: str, min_samples: int, seed: int
) -> dict[str, Any]:
    stored = reference.features_train.get(precision)
    n_reference = 0 if stored is None else len(stored)
    n_recent = 0 if recent is None or np.ndim(recent) != 2 else len(recent)
    reason = None
    if stored is None or n_reference == 0:
        have = ", ".join(sorted(reference.features_train)) or "none"
        reason = f"the reference has no {precision} features (it has: {have}); rerun `catdog reference`"
    elif n_recent < min_samples:
        reason = f"window too small: {n_recent} feature vectors, the check needs at least {min_samples}"
    if reason is not None:
        return {**_feature_fields(n_reference, n_recent), "reason": reason, "summary": f"no verdict: {reason}"}
    assert stored is not None and recent is not None
    recent_stored = np.asarray(recent, np.float64).astype(stored.dtype)  # same storage rounding on both sides
    return feature_drift(stored, recent_stored, seed=seed)


def _overall_summary(drift: bool | None, prediction: dict[str, Any], feature: dict[str, Any]) -> str:
    verdict = {True: "drift", False: "no drift", None: "no verdict"}[drift]
    return f"{verdict}. prediction: {prediction['summary']}. feature: {feature['summary']}"


# --- making the reference (runs the backbone) --------------------------------------------------
def reference_sample(unique: Sequence[Any], sample: int = REFERENCE_SAMPLE, seed: int = REFERENCE_SEED) -> list[Any]:
    """The training images the feature reference uses: the `sample` with the smallest sha256(f"{seed}:{content hash}").

    unique: Split.unique() (items with a `sha256`). Bottom-k sampling by a seeded hash of the
    content (Cohen & Kaplan 2007) is a uniform sample that stays stable as images are added: a
    retrain with 100 new uploads changes about 100 * sample / len(unique) of the chosen images,
    so the reference costs backbone passes only for those (an index-based draw would change all).
    """
    ranked = sorted(unique, key=lambda item: hashlib.sha256(f"{seed}:{item.sha256}".encode()).digest())
    return ranked[: min(sample, len(ranked))]


def head_probabilities(model_dir: Path, features: np.ndarray) -> np.ndarray:
    """(N,) float32 P(dog) of the model's head on (N, C) pooled features, through the head's ONNX graph.

    The same head graph model.onnx ends with (catdog.ml.export.head_graph), run with ONNX Runtime.
    """
    import onnxruntime as ort

    from catdog.ml.artifacts import HEAD_NPZ, ModelConfig
    from catdog.ml.export import head_graph

    config = ModelConfig.load(Path(model_dir))
    with np.load(Path(model_dir) / HEAD_NPZ) as npz:
        arrays = {key: npz[key] for key in npz.files}
    session = ort.InferenceSession(
        head_graph(arrays, config.head).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    if len(features) == 0:
        return np.zeros(0, np.float32)
    return np.asarray(session.run(None, {"features": np.asarray(features, np.float32)})[0], np.float32)


def reference_graphs(model_dir: Path, weights_dir: Path) -> dict[str, Path]:
    """precision -> the pooled-feature ONNX graph the model's served graph of that precision contains.

    fp32 always (the model's own fine-tuned graph when it has last_block.npz); int8 when a range
    table applies (the directory's calibration.json, else the backbone's packaged table) and the
    model has no fine-tuned block. Builds missing backbone graphs (needs the training extras) in
    weights_dir, the backbones' weights folder (settings.weights_dir).
    """
    from catdog.ml.artifacts import LAST_BLOCK_NPZ, ModelConfig
    from catdog.ml.backbones import create_backbone
    from catdog.ml.backbones.base import ensure_onnx
    from catdog.ml.export import calibration_table

    model_dir = Path(model_dir)
    config = ModelConfig.load(model_dir)
    backbone = create_backbone(config.backbone, weights_dir)
    if (model_dir / LAST_BLOCK_NPZ).is_file():
        from catdog.ml.export import finetuned_backbone_graph

        tuned = model_dir / "features.onnx"  # what `catdog build` exports; rebuilt when older than the block
        fresh = tuned.is_file() and tuned.stat().st_mtime >= (model_dir / LAST_BLOCK_NPZ).stat().st_mtime
        return {"fp32": tuned if fresh else finetuned_backbone_graph(backbone, model_dir)}
    graphs = {"fp32": ensure_onnx(backbone, "fp32")}
    table = calibration_table(model_dir, backbone.spec.name)
    if table is not None:
        graphs["int8"] = ensure_onnx(backbone, "int8", table)
    return graphs


def build_reference(
    model_dir: Path,
    data_dir: Path,
    *,
    settings: Settings,
    sample: int = REFERENCE_SAMPLE,
    seed: int = REFERENCE_SEED,
    progress: bool = True,
    train_split: Split | None = None,
) -> Path:
    """Compute and write `model_dir/drift_reference.npz`; returns its path.

    Training features: pooled features of `reference_sample(...)` of DATA/train (or DATA
    itself when it holds cats/ and dogs/), per precision of `reference_graphs`, through the
    feature cache (images already seen cost no backbone pass). Test predictions: the head on
    the features of every DATA/test image at the model's precision; skipped with a note when
    DATA has no test/ split. Raises DataError (a UsageProblem) for a folder that is not a data
    set, ModelDirError for a folder that is not a model, and WeightsUnavailable (a CatdogError)
    when a backbone's weights cannot be obtained. train_split: DATA's training split when the
    caller has already loaded it (training does), which saves hashing every file again.
    settings: where the backbone weights and the feature cache are and how many threads run
    (weights_dir, features_dir, threads); nothing is read from the environment.
    """
    import catdog
    from catdog.ml.artifacts import ModelConfig
    from catdog.ml.data import CLASS_DIRS, DataError, load_split, resolve_split
    from catdog.ml.preprocessing import Normalization

    model_dir, data_dir = Path(model_dir), Path(data_dir)
    config = ModelConfig.load(model_dir)
    train = train_split if train_split is not None else load_split(resolve_split(data_dir, "train"))
    unique = train.unique()
    if not unique:
        raise DataError(f"{train.root} holds no readable images")
    chosen = reference_sample(unique, sample, seed)
    normalization = Normalization.from_dict(config.normalization)
    graphs = reference_graphs(model_dir, settings.weights_dir)
    features: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for precision, graph in graphs.items():
        features[precision], digests[precision] = _pooled(
            config.backbone,
            graph,
            normalization,
            chosen,
            settings,
            progress,
            f"drift reference: {precision} train sample",
        )
    meta: dict[str, Any] = {
        "format": REFERENCE_FORMAT,
        "backbone": config.backbone,
        "model_precision": config.precision,
        "graphs_sha256_16": digests,
        "train": {
            "root": str(train.root),
            "fingerprint": train.fingerprint(),
            "unique_images": len(unique),
            "sample": len(chosen),
            "sample_requested": sample,
            "seed": seed,
            "rule": "the `sample` images of Split.unique() with the smallest sha256(f'{seed}:{image sha256}')",
        },
        "test": None,
        "notes": [],
        "catdog_version": catdog.__version__,
        "created": iso_utc(),
    }
    if config.data.get("fingerprint") not in (None, meta["train"]["fingerprint"]):
        meta["notes"].append("the training data differs from the data the model was trained on")
    p_dog = None
    test_dir = data_dir / "test"
    if all((test_dir / name).is_dir() for name in CLASS_DIRS):
        test = load_split(test_dir)
        precision = config.precision if config.precision in graphs else "fp32"
        test_features, _ = _pooled(
            config.backbone,
            graphs[precision],
            normalization,
            test.samples,
            settings,
            progress,
            "drift reference: test split",
        )
        p_dog = head_probabilities(model_dir, test_features)
        meta["test"] = {
            "root": str(test.root),
            "fingerprint": test.fingerprint(),
            "n": len(p_dog),
            "precision": precision,
        }
    else:
        meta["notes"].append(f"no {test_dir}/{{cats,dogs}}: no test-split predictions, so no prediction drift")
    return DriftReference(features_train=features, p_dog_test=p_dog, meta=meta).save(model_dir)


def _pooled(
    backbone: str,
    graph: Path,
    normalization: Any,
    samples: Sequence[Any],
    settings: Settings,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, str]:
    """((N, C) float32 pooled features of the samples' plain view, the graph's digest), through the cache."""
    from catdog.ml.features import pooled_features

    return pooled_features(
        backbone,
        graph,
        normalization,
        samples,
        features_dir=settings.features_dir,
        threads=settings.threads,
        progress=progress,
        desc=desc,
    )
