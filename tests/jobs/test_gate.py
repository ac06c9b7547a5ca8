"""The promotion gate: McNemar's exact test, each check blocking on its own, and a chain that cannot erode."""

from __future__ import annotations

from math import comb
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from catdog.jobs.gate import CHECK_NAMES, Contender, GateDecision, check_production, decide, mcnemar_exact
from catdog.jobs.retrain import SAME_FEATURES, judge
from catdog.ml.evaluate import PairedEvaluation
from catdog.registry import GateReference, ModelVersionInfo
from catdog.settings import Settings

TOLERANCE = 0.005
ALPHA = 0.05
FLOOR = 0.90


def gate(new: Contender, production: Contender | None, reference: Contender | None, labels: Any = None) -> GateDecision:
    return decide(
        new,
        production,
        reference,
        labels,
        tolerance=TOLERANCE,
        alpha=ALPHA,
        min_accuracy=FLOOR,
        reference_source="first production",
    )


def failed(decision: GateDecision) -> set[str]:
    return {check.name for check in decision.checks if not check.passed}


def with_mistakes(labels: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Predictions equal to the labels except at the indices `wrong`."""
    predicted = labels.copy()
    predicted[wrong] = 1 - predicted[wrong]
    return predicted


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(labels == predicted))


# --- McNemar's exact test ------------------------------------------------------------------------------
def test_mcnemar_exact_is_the_binomial_tail_of_the_discordant_pairs() -> None:
    """b=8 images only the new model gets wrong, c=1 only the old: p = P(X >= 8 | 9, 1/2) = (9 + 1) / 2^9."""
    new_correct = np.array([False] * 8 + [True] * 1 + [True] * 20 + [False] * 3)
    old_correct = np.array([True] * 8 + [False] * 1 + [True] * 20 + [False] * 3)
    test = mcnemar_exact(new_correct, old_correct)
    assert (test.n, test.b, test.c) == (32, 8, 1)
    assert test.p_value == pytest.approx((comb(9, 8) + comb(9, 9)) / 2**9)
    # the concordant pairs do not matter, and the test is one-sided: the new model better gives p near 1
    assert mcnemar_exact(new_correct[:9], old_correct[:9]).p_value == pytest.approx(test.p_value)
    assert mcnemar_exact(old_correct, new_correct).p_value == pytest.approx(1 - 1 / 2**9)
    assert mcnemar_exact(np.ones(5, bool), np.ones(5, bool)).p_value == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="one length"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_the_production_check_both_ways() -> None:
    production = Contender(1, 0.98, how="its head on the same test features")
    better = check_production(Contender(None, 0.99), production, 0.0)
    assert better.passed and "not worse than production v1" in better.detail
    worse = check_production(Contender(None, 0.97), production, 0.005)
    assert not worse.passed and "worse than production" in worse.detail
    assert worse.figures["difference"] == pytest.approx(-0.01)
    assert check_production(Contender(None, 0.978), production, 0.005).passed  # within the tolerance
    assert check_production(Contender(None, 0.975), production, 0.005).passed  # on it exactly (float rounding)
    assert not check_production(Contender(None, 0.99), None, 0.0).passed  # nothing to compare with
    assert not check_production(Contender(None, 0.99), Contender(1, None), 0.0).passed


# --- each check blocks on its own ----------------------------------------------------------------------
N = 2000
LABELS = np.random.default_rng(0).integers(0, 2, N)


def paired(wrong: range | list[int] | np.ndarray, version: int | None = None) -> Contender:
    predicted = with_mistakes(LABELS, np.asarray(wrong, dtype=int))
    return Contender(version, accuracy(LABELS, predicted), predicted, SAME_FEATURES)


def unpaired(acc: float, version: int | None = None) -> Contender:
    return Contender(version, acc, None, "its registered test metrics")


@pytest.mark.parametrize(
    ("new", "production", "reference", "blocking"),
    [
        # (a) accuracy: 2 points below production, yet within the tolerance of a weaker reference
        (unpaired(0.95), unpaired(0.97, 1), unpaired(0.951, 1), "production"),
        # (a) McNemar: 0.45 points below production (inside the tolerance), but 11 of the 13
        # discordant images are new mistakes: significantly worse
        (paired(range(2, 51)), paired(range(40), 3), paired(range(40), 1), "mcnemar"),
        # (b) within the tolerance of production, but 1 point below the reference
        (unpaired(0.95), unpaired(0.952, 3), unpaired(0.96, 1), "reference"),
        # (c) as good as production and the reference, under the floor
        (unpaired(0.85), unpaired(0.85, 3), unpaired(0.85, 1), "floor"),
    ],
)
def test_each_check_blocks_on_its_own(
    new: Contender, production: Contender, reference: Contender, blocking: str
) -> None:
    decision = gate(new, production, reference, LABELS)
    assert not decision.promoted and failed(decision) == {blocking}
    assert decision.reason.startswith("kept as staging: ")
    blocked = next(c for c in decision.checks if c.name == blocking)
    assert blocked.detail in decision.reason
    # the same candidate with that one obstacle removed is promoted
    if blocking == "floor":
        relaxed = decide(new, production, reference, LABELS, tolerance=TOLERANCE, alpha=ALPHA, min_accuracy=0.8)
    elif blocking == "mcnemar":
        relaxed = decide(new, production, reference, LABELS, tolerance=TOLERANCE, alpha=1e-9, min_accuracy=FLOOR)
    else:
        relaxed = decide(new, production, reference, LABELS, tolerance=0.03, alpha=ALPHA, min_accuracy=FLOOR)
    assert relaxed.promoted and "not worse than production" in relaxed.reason


def test_the_mcnemar_figures_are_recorded() -> None:
    decision = gate(paired(range(2, 51)), paired(range(40), 3), paired(range(40), 1), LABELS)
    mcnemar = next(c.to_dict() for c in decision.checks if c.name == "mcnemar")
    assert mcnemar["passed"] is False and mcnemar["skipped"] is False
    assert (mcnemar["n"], mcnemar["b"], mcnemar["c"], mcnemar["production_version"]) == (N, 11, 2, 3)
    assert mcnemar["p_value"] == pytest.approx(sum(comb(13, k) for k in range(11, 14)) / 2**13)
    assert mcnemar["alpha"] == ALPHA and "McNemar" in mcnemar["detail"]


def test_every_check_is_reported_with_its_figures_when_promoted() -> None:
    decision = gate(paired(range(5, 35)), paired(range(25), 3), paired(range(35), 1), LABELS)
    assert decision.promoted and decision.reason.startswith("not worse than production v3")
    checks = {c["name"]: c for c in decision.checks_list()}
    assert list(checks) == list(CHECK_NAMES) and all(c["passed"] for c in checks.values())
    assert checks["production"]["production_accuracy"] == pytest.approx(1 - 25 / N)
    assert checks["reference"]["reference_accuracy"] == pytest.approx(1 - 35 / N)
    assert checks["reference"]["source"] == "first production"
    assert (checks["mcnemar"]["b"], checks["mcnemar"]["c"]) == (10, 5)
    assert checks["floor"] == {
        "name": "floor",
        "passed": True,
        "skipped": False,
        "detail": checks["floor"]["detail"],
        "accuracy": pytest.approx(1 - 30 / N),
        "min_accuracy": FLOOR,
    }
    assert decision.to_dict() == {"promoted": True, "reason": decision.reason}


def test_mcnemar_does_not_run_without_paired_predictions_and_says_so() -> None:
    decision = gate(paired(range(30)), unpaired(0.985, 3), unpaired(0.985, 1), LABELS)
    mcnemar = next(c for c in decision.checks if c.name == "mcnemar")
    assert mcnemar.skipped and mcnemar.passed and "not run" in mcnemar.detail and "another backbone" in mcnemar.detail
    assert decision.promoted


def test_no_reference_or_no_production_blocks() -> None:
    assert failed(gate(unpaired(0.99), unpaired(0.98, 1), None)) == {"reference"}
    assert failed(gate(unpaired(0.99), None, unpaired(0.98, 1))) == {"production"}
    missing = gate(unpaired(0.99), unpaired(0.98, 1), Contender(7, None, None, "no such version in the registry"))
    assert failed(missing) == {"reference"} and "reference v7" in missing.reason


# --- a chain of retrains cannot erode ------------------------------------------------------------------
def retrain_chain(seed: int, steps: int, reference_is_production: bool = False) -> tuple[list[float], float, int]:
    """Retrains, each a bit worse than production: (production accuracy after each step, reference accuracy, promoted).

    Each candidate fixes 30 of production's mistakes and makes 31-34 new ones (0.05-0.2 points
    worse: inside the tolerance, and not significant by McNemar). reference_is_production: the
    old gate, which compared with production only.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, N)
    production = with_mistakes(labels, rng.choice(N, 40, replace=False))  # 98.0%
    reference = Contender(1, accuracy(labels, production), production.copy(), SAME_FEATURES)
    version, promotions, trail = 1, 0, []
    for _ in range(steps):
        wrong = np.flatnonzero(production != labels)
        right = np.flatnonzero(production == labels)
        fixed = rng.choice(wrong, min(30, len(wrong)), replace=False)
        broken = rng.choice(right, len(fixed) + int(rng.integers(1, 5)), replace=False)
        candidate = production.copy()
        candidate[fixed] = labels[fixed]
        candidate[broken] = 1 - labels[broken]
        current = Contender(version, accuracy(labels, production), production, SAME_FEATURES)
        decision = gate(
            Contender(None, accuracy(labels, candidate), candidate, SAME_FEATURES),
            current,
            current if reference_is_production else reference,
            labels,
        )
        if decision.promoted:
            version, promotions, production = version + 1, promotions + 1, candidate
        trail.append(accuracy(labels, production))
    assert reference.accuracy is not None
    return trail, reference.accuracy, promotions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_chain_of_slightly_worse_retrains_never_ends_below_reference_minus_tolerance(seed: int) -> None:
    trail, reference, promotions = retrain_chain(seed, steps=60)
    assert promotions >= 2, "the chain never promoted: the test would prove nothing"
    assert min(trail) >= reference - TOLERANCE - 1e-12
    # the old gate (production only) lets the same chain erode far past it: this test can fail
    eroded, _, _ = retrain_chain(seed, steps=60, reference_is_production=True)
    assert min(eroded) < reference - TOLERANCE


# --- the retrain job's glue: which figures the gate gets -------------------------------------------------
def version_info(version: int, backbone: str, accuracy: float) -> ModelVersionInfo:
    return ModelVersionInfo(
        version=version,
        model_version=f"{backbone}-{version:08x}",
        backbone=backbone,
        model_dir=Path("/nowhere"),
        aliases=(),
        created_at="",
        run_id=None,
        source="retrain",
        metrics={"accuracy": accuracy},
    )


def test_judge_pairs_same_backbone_heads_and_falls_back_to_registered_metrics(tmp_path: Path) -> None:
    labels = np.array([0, 1] * 50)
    new = with_mistakes(labels, np.arange(3))
    production = with_mistakes(labels, np.arange(2))
    evaluation = PairedEvaluation(
        metrics={"accuracy": accuracy(labels, new)},
        labels=labels,
        predicted={"new": new, "production": production},
        compared={"production": {"accuracy": accuracy(labels, production)}},
        skipped={"reference": "backbone vgg16, not efficientnet_lite0: no shared features"},
    )
    settings = Settings(state_dir=tmp_path, gate_tolerance=0.02, gate_min_accuracy=0.5)
    decision = judge(
        evaluation,
        version_info(3, "efficientnet_lite0", 0.5),  # its registered figure is not used: its head ran
        version_info(1, "vgg16", 0.975),
        GateReference(1, "first production"),
        settings,
    )
    checks = {c["name"]: c for c in decision.checks_list()}
    assert checks["production"]["production_accuracy"] == pytest.approx(0.98)
    assert checks["production"]["how"] == SAME_FEATURES
    assert (checks["mcnemar"]["b"], checks["mcnemar"]["c"]) == (1, 0)
    assert checks["reference"]["reference_accuracy"] == 0.975
    assert checks["reference"]["how"] == "its registered test metrics"
    assert decision.promoted
    # a reference that names no version blocks
    gone = judge(evaluation, version_info(3, "efficientnet_lite0", 0.98), None, GateReference(9, "setting"), settings)
    assert failed(gone) == {"reference"} and "reference v9 (setting)" in gone.reason
