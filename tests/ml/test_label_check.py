"""Confident learning on out-of-sample probabilities: flipped uploads are caught, the base set only reported.

Synthetic pooled features stand in for a backbone's: non-negative, one block of channels per class,
and a small share of images that look half like the other class (the ambiguous photos every real
set has). The issue's target is checked on them: 100 correct uploads plus 30 cats uploaded as
dogs, at least 90% of the flipped ones quarantined, at most 5% of the correct ones, and the head
trained without the quarantined ones within 0.2 points of one trained on the correct ones only.
"""

from __future__ import annotations

import numpy as np
import pytest

from catdog.ml.label_check import check_labels, make_head, out_of_sample_probabilities

DIM = 32


def _features(rng: np.random.Generator, n: int, label: int, ambiguous: float = 0.02) -> np.ndarray:
    """(n, DIM) float32: the class's block of channels lit, `ambiguous` of them 30-70% the other class's."""
    means = np.zeros((2, DIM))
    means[0, : DIM // 2] = 1.5
    means[1, DIM // 2 :] = 1.5
    share = np.where(rng.random(n) < ambiguous, rng.uniform(0.3, 0.7, n), 0.0)
    mixed = (1 - share)[:, None] * means[label] + share[:, None] * means[1 - label]
    return np.abs(mixed + rng.normal(0, 0.6, (n, DIM))).astype(np.float32)


def _uploads_world(seed: int = 0, base: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.vstack(
        [
            _features(rng, base, 0),
            _features(rng, base, 1),
            _features(rng, 50, 0),  # correct uploads
            _features(rng, 50, 1),
            _features(rng, 30, 0),  # cats uploaded as dogs
        ]
    )
    y = np.repeat([0, 1, 0, 1, 1], [base, base, 50, 50, 30])
    kind = np.repeat(["base", "base", "correct", "correct", "flipped"], [base, base, 50, 50, 30])
    test_x = np.vstack([_features(rng, 1000, 0), _features(rng, 1000, 1)])
    return {"x": x, "y": y, "kind": kind, "test_x": test_x, "test_y": np.repeat([0, 1], 1000)}


def test_flipped_uploads_are_quarantined_and_the_new_head_loses_nothing() -> None:
    world = _uploads_world()
    x, y, kind = world["x"], world["y"], world["kind"]
    check = check_labels(x, y, kind != "base", folds=5)
    flipped = check.quarantine[kind == "flipped"]
    correct = check.quarantine[kind == "correct"]
    assert flipped.mean() >= 0.9, f"{flipped.sum()} of 30 flipped quarantined"
    assert correct.mean() <= 0.05, f"{correct.sum()} of 100 correct quarantined"
    assert not check.quarantine[kind == "base"].any()  # the base set is reported, never quarantined
    assert check.folds == 5 and check.skipped is None

    def accuracy(train: np.ndarray) -> float:
        head = make_head().fit(x[train], y[train])
        return float((head.predict(world["test_x"]) == world["test_y"]).mean())

    checked = accuracy(~check.quarantine)
    only_correct = accuracy(kind != "flipped")
    assert abs(checked - only_correct) <= 0.002, (checked, only_correct)


def test_base_set_label_errors_are_reported_ranked_least_likely_first() -> None:
    world = _uploads_world(seed=1)
    x, y, kind = world["x"], world["y"].copy(), world["kind"]
    wrong = np.flatnonzero(kind == "base")[:10]  # ten base cats labelled dog
    y[wrong] = 1
    check = check_labels(x, y, kind != "base", folds=5)
    base_issues = check.ranked(check.issues & (kind == "base"))
    assert len(set(wrong) & set(base_issues.tolist())) >= 8
    assert np.all(np.diff(check.p_given[base_issues]) >= 0)  # least likely label first
    assert not check.quarantine[wrong].any()


def test_uploads_an_admin_keeps_are_never_quarantined() -> None:
    world = _uploads_world(seed=2)
    kind = world["kind"]
    candidates = kind == "correct"  # the flipped ones were kept by an admin
    check = check_labels(world["x"], world["y"], candidates, folds=5)
    assert not check.quarantine[kind == "flipped"].any()
    assert check.issues[kind == "flipped"].mean() >= 0.5  # still seen as issues, and so reported


def test_probabilities_are_out_of_sample() -> None:
    """Random labels on noise: heads that saw an image would fit it; heads that did not are at chance."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 256)).astype(np.float32) + 3.0
    y = rng.integers(0, 2, 200)
    held_out = out_of_sample_probabilities(x, y, 5)
    assert held_out.shape == (200, 2) and np.allclose(held_out.sum(axis=1), 1.0)
    assert abs(float((held_out.argmax(axis=1) == y).mean()) - 0.5) < 0.12
    seen = make_head().fit(x, y).predict(x)
    assert float((seen == y).mean()) > 0.95


def test_folds_follow_the_smallest_class_and_progress_is_reported() -> None:
    rng = np.random.default_rng(4)
    x = np.vstack([_features(rng, 40, 0), _features(rng, 3, 1)])
    y = np.repeat([0, 1], [40, 3])
    seen: list[tuple[int, int]] = []
    check = check_labels(x, y, np.ones(43, bool), folds=5, on_fold=lambda done, total: seen.append((done, total)))
    assert check.folds == 3 and seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    lonely = check_labels(x[:41], y[:41], np.ones(41, bool))
    assert lonely.folds == 0 and lonely.skipped and "at least 2 per class" in lonely.skipped
    assert not lonely.quarantine.any() and np.isnan(lonely.p_given).all()


def test_a_raising_callback_stops_the_check() -> None:
    world = _uploads_world(seed=5, base=50)

    def cancel(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        check_labels(world["x"], world["y"], world["kind"] != "base", on_fold=cancel)


def test_bad_input_is_refused() -> None:
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="candidates"):
        check_labels(x, np.array([0, 1, 0, 1]), np.ones(3, bool))
    with pytest.raises(ValueError, match="0 \\(cat\\) or 1 \\(dog\\)"):
        check_labels(x, np.array([0, 1, 2, 1]), np.ones(4, bool))
    with pytest.raises(ValueError, match="features must be"):
        out_of_sample_probabilities(np.zeros(4), np.zeros(4), 2)
