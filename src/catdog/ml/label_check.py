"""Label checks before a retrain: which uploaded labels look wrong, by confident learning.

Pure: features, labels and flags in, issues out (no database, no settings, no web). The retrain
job (catdog.jobs.quarantine) feeds it the cached backbone features of the base training set plus
the uploads and quarantines the uploads it flags.

How (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels",
JAIR 2021, arXiv:1911.00068): every image gets an *out-of-sample* P(class) from K-fold
cross-validation of a linear head (a logistic regression on the L2-normalized, standardized
pooled features: the served head's inputs, without its hidden layers, so K fits take seconds;
C = 0.03, the best-calibrated of 0.01-1 by out-of-sample log loss on the train split's VGG16 and
EfficientNet-Lite0 features: 0.049 and 0.034), and cleanlab's `find_label_issues`
(filter_by="prune_by_noise_rate", the library's default) estimates the joint of given and true
labels from those probabilities and flags, per off-diagonal entry, the images whose given label
is least likely; a flag also needs P(its label) < 0.5 (the heads answer the other class).
Those are the base set's label issues: reported, never quarantined.

An upload (a candidate) is quarantined when cleanlab flags it, or when the heads that never saw
it answer the other class (P(its label) < 0.5, `max_p_label`). Why both: the confident joint
counts an image as mislabelled only when P(the other class) reaches that class's mean
self-confidence (~0.97 here), so it undercounts flips the heads put at, say, P(label) = 0.2, and
for a stranger's upload the costs are not symmetric (a correct one held back waits for an admin's
Keep; a flipped one trained on costs accuracy). Measured with bench/label_check.py (100 correct
uploads + 30 cats uploaded as dogs; base set: the rest of the train split), cleanlab's flags
alone quarantined 29, 27, 22 of 30 flipped (VGG16, 3 draws) and 26, 26, 25, 27 (Lite0, 4 draws);
with the disagreement rule 30, 28, 29 and 30, 30, 29, 30, while 1, 0, 1 and 2, 1, 0, 0 of the
100 correct ones were held back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

MAX_P_LABEL = 0.5  # below this out-of-sample P(given label) the heads answer the other class
LOGISTIC_C = 0.03  # inverse L2 strength of the cross-validated head (best out-of-sample log loss)
FoldCallback = Callable[[int, int], None]  # (folds done, folds); whatever it raises stops the check


@dataclass(frozen=True)
class LabelCheck:
    """The outcome for N images (same order as the inputs).

    p_given: (N,) float64, the out-of-sample P(given label) (NaN when the check was skipped);
    pred_probs: (N, 2) float64, out-of-sample [P(cat), P(dog)];
    issues: (N,) bool, cleanlab's label issues that also have P(given label) < max_p_label;
    quarantine: (N,) bool, the candidates that are issues or have P(given label) < max_p_label
    (what a retrain leaves out);
    folds: the K actually used (0 when skipped); skipped: why no check ran, else None.
    """

    p_given: np.ndarray
    pred_probs: np.ndarray
    issues: np.ndarray
    quarantine: np.ndarray
    folds: int
    skipped: str | None = None

    def ranked(self, mask: np.ndarray) -> np.ndarray:
        """Indices where mask (N,) bool is set, the least likely label first (ascending p_given)."""
        indices = np.flatnonzero(mask)
        return indices[np.argsort(self.p_given[indices], kind="stable")]


def make_head(seed: int = 0, c: float = LOGISTIC_C) -> Pipeline:
    """The cross-validated head: L2-normalize rows, standardize columns, logistic regression (scikit-learn)."""
    return make_pipeline(Normalizer(), StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


def out_of_sample_probabilities(
    features: np.ndarray, labels: np.ndarray, folds: int, *, seed: int = 0, on_fold: FoldCallback | None = None
) -> np.ndarray:
    """(N, 2) float64 [P(cat), P(dog)] of each image from the head fitted on the other folds.

    features: (N, D) float; labels: (N,) int in {0, 1}; folds: K of a stratified K-fold split
    (shuffled with `seed`). Raises ValueError when a class has fewer than `folds` images
    (scikit-learn's StratifiedKFold refuses such a split).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"features must be (N, D) and labels (N,): got {x.shape} and {y.shape}")
    probabilities = np.zeros((len(x), 2), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    head = make_head(seed)
    if on_fold is not None:
        on_fold(0, folds)
    for done, (train, held_out) in enumerate(splitter.split(x, y), start=1):
        fitted = clone(head).fit(x[train], y[train])
        probabilities[held_out] = fitted.predict_proba(x[held_out])
        if on_fold is not None:
            on_fold(done, folds)
    return probabilities


def check_labels(
    features: np.ndarray,
    labels: np.ndarray,
    candidates: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    max_p_label: float = MAX_P_LABEL,
    on_fold: FoldCallback | None = None,
) -> LabelCheck:
    """Confident learning over all N images; the flagged candidates are the ones to quarantine.

    features: (N, D) float pooled backbone features; labels: (N,) int (0 cat, 1 dog), the given
    labels; candidates: (N,) bool, the images that may be quarantined (uploads an admin has not
    kept); the rest (the base set, kept uploads) take part in the cross-validation and are
    reported through `issues`, never quarantined; a candidate is quarantined when it is an issue
    or its P(given label) is below max_p_label. folds: K, lowered to the smallest class's size
    when that is smaller; with fewer than 2 images in a class nothing is checked (`skipped` says
    so). Raises ValueError for arrays of mismatched shapes or labels outside {0, 1}.
    """
    from cleanlab.filter import find_label_issues

    x = np.asarray(features)
    y = np.asarray(labels, dtype=np.int64)
    flags = np.asarray(candidates, dtype=bool)
    if x.ndim != 2 or y.shape != (len(x),) or flags.shape != (len(x),):
        raise ValueError(f"features (N, D), labels (N,), candidates (N,): got {x.shape}, {y.shape}, {flags.shape}")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (cat) or 1 (dog)")
    smallest = int(np.bincount(y, minlength=2).min()) if len(y) else 0
    used = min(folds, smallest)
    if used < 2:
        nothing = np.zeros(len(y), dtype=bool)
        why = f"a class has {smallest} images: cross-validation needs at least 2 per class"
        return LabelCheck(np.full(len(y), np.nan), np.full((len(y), 2), np.nan), nothing, nothing, 0, why)
    pred_probs = out_of_sample_probabilities(x, y, used, seed=seed, on_fold=on_fold)
    p_given = pred_probs[np.arange(len(y)), y]
    found = find_label_issues(y, pred_probs, filter_by="prune_by_noise_rate", n_jobs=1)
    issues = np.asarray(found, dtype=bool) & (p_given < max_p_label)
    return LabelCheck(p_given, pred_probs, issues, flags & (issues | (p_given < max_p_label)), used)
