"""The promotion gate: may a new version become production? Pure functions of numbers and arrays.

A new version is promoted only when every check passes (TFX's Evaluator likewise blesses a model
against the last blessed one *and* absolute thresholds):

(a) "production": its test accuracy is not below production's by more than `tolerance`;
    "mcnemar": and it is not significantly worse than production by McNemar's exact test on the
    paired predictions of the two on the same test images (one-sided, level `alpha`);
(b) "reference": its test accuracy is not below the reference version's by more than `tolerance`;
(c) "floor": its test accuracy is at least `min_accuracy`.

Why (b) stops erosion: every promoted version v passed acc(v) >= acc(reference) - tolerance, so
however long a chain of retrains, each a little worse than the last but within tolerance of
production, production never ends below the reference minus the tolerance (a gate on (a) alone
lets k steps lose up to k * tolerance). The reference only moves when an admin moves it.

McNemar's test (McNemar 1947, "Note on the sampling error of the difference between correlated
proportions or percentages", Psychometrika 12(2):153-157), used to compare two classifiers on one
test set as Dietterich (1998, Neural Computation 10(7):1895-1923) recommends, in its exact
(conditional binomial) form: of the N paired predictions only the discordant ones tell the models
apart, b = images the new version gets wrong and production right, c = images the new version
gets right and production wrong. Under H0 (equally accurate) b ~ Binomial(b + c, 1/2); the
one-sided p-value of "the new version is worse" is P(X >= b), scipy.stats.binomtest(b, b + c,
0.5, alternative="greater"). No discordant pair: p = 1.

Nothing here reads settings: the caller passes tolerance, alpha and the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Accuracies are fractions k/N; a comparison allows this much float rounding (far below 1/N).
ROUNDING = 1e-9
CHECK_NAMES = ("production", "mcnemar", "reference", "floor")


@dataclass(frozen=True)
class Contender:
    """One version's figures on the test split, as the gate compares them.

    version: registry version number (None: not registered, e.g. the new one). accuracy: test
    accuracy as a fraction in [0, 1] (None: unknown). predicted: (N,) predicted classes (0 cat,
    1 dog; any int or bool dtype) on the very same N test images, in the same order, as the new
    version's; None when they are not paired (another backbone: no shared features). how: where
    the accuracy comes from, for the reason text ("its head on the same test features").
    """

    version: int | None
    accuracy: float | None
    predicted: np.ndarray | None = None
    how: str = ""


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of "new is worse than old" on paired predictions.

    n: paired images; b: new wrong and old right; c: new right and old wrong; p_value: one-sided
    P(X >= b) for X ~ Binomial(b + c, 1/2) (1.0 when b + c == 0).
    """

    n: int
    b: int
    c: int
    p_value: float


@dataclass(frozen=True)
class Check:
    """One check's outcome: name (one of CHECK_NAMES), passed, a one-line detail, and its figures.

    skipped: the check could not run (e.g. McNemar without paired predictions); it then passes
    and its detail says why, so the other checks decide.
    """

    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"name", "passed", "skipped", "detail", **figures} (what the `gate_checks` tag holds)."""
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped, "detail": self.detail} | dict(
            self.figures
        )


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: promoted only when every check passed; reason: one line with the figures."""

    promoted: bool
    reason: str
    checks: tuple[Check, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """{"promoted", "reason"}: the retrain job result's `gate` (unchanged shape; checks go beside it)."""
        return {"promoted": self.promoted, "reason": self.reason}

    def checks_list(self) -> list[dict[str, Any]]:
        return [check.to_dict() for check in self.checks]


def mcnemar_exact(new_correct: np.ndarray, old_correct: np.ndarray) -> McNemar:
    """McNemar's exact one-sided test that the new model is worse, from (N,) bool "right?" arrays.

    new_correct[i], old_correct[i]: whether each model classified test image i right (same images,
    same order). Raises ValueError when the arrays are not 1-D of one length. See the module's
    docstring for the formula and its sources.
    """
    from scipy.stats import binomtest

    new = np.asarray(new_correct, dtype=bool)
    old = np.asarray(old_correct, dtype=bool)
    if new.ndim != 1 or new.shape != old.shape:
        raise ValueError(f"paired predictions need two 1-D arrays of one length, got {new.shape} and {old.shape}")
    b = int(np.count_nonzero(~new & old))
    c = int(np.count_nonzero(new & ~old))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="greater").pvalue)
    return McNemar(n=int(new.size), b=b, c=c, p_value=p_value)


def check_production(new: Contender, production: Contender | None, tolerance: float) -> Check:
    """(a) accuracy: new.accuracy >= production.accuracy - tolerance; fails when production has no figure."""
    if production is None or production.accuracy is None or new.accuracy is None:
        what = "no production version"
        if production is not None:
            what = f"production v{production.version} has no test accuracy"
        return Check("production", False, f"{what} to compare with", {})
    within, figures, text = _within_tolerance(new, production, tolerance, "production")
    if within:
        return Check("production", True, f"not worse than production v{production.version}: {text}", figures)
    return Check("production", False, f"worse than production v{production.version}: {text}", figures)


def check_mcnemar(labels: np.ndarray | None, new: Contender, production: Contender | None, alpha: float) -> Check:
    """(a) McNemar's exact test on paired predictions: fails when new is worse at one-sided level alpha.

    labels: (N,) true classes (0 cat, 1 dog) of the test images both predictions are on. Skipped
    (passes) when there are no labels or either side has no paired predictions, saying why.
    ValueError on mismatched shapes.
    """
    if production is None:
        return Check("mcnemar", True, "McNemar's test not run: there is no production version", {}, skipped=True)
    if labels is None or new.predicted is None or production.predicted is None:
        return Check(
            "mcnemar",
            True,
            f"McNemar's test not run: production v{production.version} has no predictions on the same test "
            f"features (another backbone); compared by {production.how or 'its registered metrics'} only",
            {"production_version": production.version, "alpha": alpha},
            skipped=True,
        )
    truth = np.asarray(labels).astype(int)
    test = mcnemar_exact(np.asarray(new.predicted).astype(int) == truth, np.asarray(production.predicted) == truth)
    figures = {
        "production_version": production.version,
        "n": test.n,
        "b": test.b,
        "c": test.c,
        "p_value": test.p_value,
        "alpha": alpha,
    }
    text = (
        f"b={test.b} images only the new version gets wrong, c={test.c} only production gets wrong, "
        f"one-sided exact p={test.p_value:.4g}"
    )
    if test.p_value < alpha:
        return Check(
            "mcnemar",
            False,
            f"significantly worse than production v{production.version} by McNemar's exact test ({text} < {alpha})",
            figures,
        )
    return Check("mcnemar", True, f"McNemar's exact test: not significantly worse ({text} >= {alpha})", figures)


def check_reference(new: Contender, reference: Contender | None, tolerance: float, source: str = "") -> Check:
    """(b) accuracy: new.accuracy >= reference.accuracy - tolerance; fails when the reference has no figure.

    source: how the reference was chosen ("first production", "setting", "admin (API)" ...), for the text.
    """
    named = "" if reference is None else f"reference v{reference.version}" + (f" ({source})" if source else "")
    if reference is None or reference.accuracy is None or new.accuracy is None:
        why = "there is no reference version" if reference is None else f"{named} has no test accuracy"
        figures: dict[str, Any] = (
            {} if reference is None else {"reference_version": reference.version, "source": source}
        )
        how = f" ({reference.how})" if reference is not None and reference.how else ""
        return Check("reference", False, f"{why}{how}", figures)
    within, figures, text = _within_tolerance(new, reference, tolerance, "reference")
    figures["source"] = source
    if within:
        return Check("reference", True, f"within the tolerance of {named}: {text}", figures)
    return Check("reference", False, f"below {named} by more than the tolerance: {text}", figures)


def _within_tolerance(
    new: Contender, other: Contender, tolerance: float, role: str
) -> tuple[bool, dict[str, Any], str]:
    """(new.accuracy >= other.accuracy - tolerance, the figures with `role`_version/_accuracy, the text).

    Both accuracies must be set (the callers check). ROUNDING absorbs float error at the boundary.
    """
    ours, theirs = float(new.accuracy or 0.0), float(other.accuracy or 0.0)
    figures: dict[str, Any] = {
        "accuracy": ours,
        f"{role}_version": other.version,
        f"{role}_accuracy": theirs,
        "difference": ours - theirs,
        "tolerance": tolerance,
        "how": other.how,
    }
    text = f"accuracy {ours:.4f} vs {theirs:.4f} ({other.how}; tolerance {tolerance:.4f})"
    return ours >= theirs - tolerance - ROUNDING, figures, text


def check_floor(new: Contender, min_accuracy: float) -> Check:
    """(c) new.accuracy >= min_accuracy (the absolute floor, CATDOG_GATE_MIN_ACCURACY)."""
    if new.accuracy is None:
        return Check("floor", False, "the new version has no test accuracy", {"min_accuracy": min_accuracy})
    ours = float(new.accuracy)
    figures = {"accuracy": ours, "min_accuracy": min_accuracy}
    if ours >= min_accuracy - ROUNDING:
        return Check("floor", True, f"at or above the floor: accuracy {ours:.4f} >= {min_accuracy:.4f}", figures)
    return Check("floor", False, f"below the floor: accuracy {ours:.4f} < {min_accuracy:.4f}", figures)


def decide(
    new: Contender,
    production: Contender | None,
    reference: Contender | None,
    labels: np.ndarray | None,
    *,
    tolerance: float,
    alpha: float,
    min_accuracy: float,
    reference_source: str = "",
) -> GateDecision:
    """Run every check; promoted only when all pass.

    new: the candidate (its accuracy and, for McNemar, its predicted classes); production,
    reference: the current production and the gate's reference version (None: there is none,
    which fails their check); labels: (N,) true classes of the paired test images (None: no
    McNemar). tolerance: accuracy (fraction) a new version may lose against production and the
    reference; alpha: McNemar's one-sided level; min_accuracy: the floor. The reason lists every
    check's detail when promoted (it starts "not worse than production ..."), else the failed ones.
    """
    checks = (
        check_production(new, production, tolerance),
        check_mcnemar(labels, new, production, alpha),
        check_reference(new, reference, tolerance, reference_source),
        check_floor(new, min_accuracy),
    )
    promoted = all(check.passed for check in checks)
    if promoted:
        return GateDecision(True, "; ".join(check.detail for check in checks), checks)
    failed = "; ".join(check.detail for check in checks if not check.passed)
    return GateDecision(False, f"kept as staging: {failed}", checks)
