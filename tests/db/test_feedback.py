"""Feedback counted per picture and version: a flood on one picture moves live accuracy by one picture at most.

On SQLite and PostgreSQL (the window function and the distinct counts run on both).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from scipy.stats import binomtest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catdog.db import feedback as feedback_db
from catdog.db.models import Feedback, Prediction

from .conftest import record

V1, V2 = "vgg16-v1", "vgg16-v2"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def predict(sessions: sessionmaker[Session], picture: str, version: str = V1, **fields: Any) -> str:
    """One stored prediction of the picture (a name standing for its bytes); its id."""
    one = record(model_version=version, content_sha256=sha(picture), **fields)
    with sessions() as session:
        session.add(Prediction(**one.row()))
        session.commit()
    return one.id


def judge(sessions: sessionmaker[Session], prediction_id: str, right: bool, client: str | None = "198.51.100.1") -> str:
    """Feedback on a prediction (predicted "dog" by default): right or wrong; the feedback id."""
    with sessions() as session:
        predicted = session.get(Prediction, prediction_id).predicted_class  # type: ignore[union-attr]
        label = predicted if right else ("cat" if predicted == "dog" else "dog")
        return feedback_db.add_feedback(session, prediction_id, label, client).id


def stats(sessions: sessionmaker[Session], since: datetime | None = None) -> dict[str, dict[str, Any]]:
    with sessions() as session:
        return {row["model_version"]: row["feedback"] for row in feedback_db.version_stats(session, since)}


def test_a_flood_on_one_picture_from_one_client_moves_the_count_by_one_picture(
    sessions: sessionmaker[Session],
) -> None:
    honest = [predict(sessions, f"honest-{i}") for i in range(20)]
    for i, prediction_id in enumerate(honest):
        judge(sessions, prediction_id, right=True, client=f"203.0.113.{i % 4}")
    before = stats(sessions)[V1]
    for _ in range(200):  # 200 cached predictions of one photo, each told it was wrong, by one client
        judge(sessions, predict(sessions, "flooded", cached=True), right=False, client="198.51.100.66")
    after = stats(sessions)[V1]
    assert before["n"] == before["pictures"] == 20 and before["accuracy"] == 1.0 and before["clients"] == 4
    assert after["n"] - before["n"] <= 1
    assert after["n"] == after["pictures"] == 21 and after["correct"] == 20
    assert after["accuracy"] == pytest.approx(20 / 21, abs=1e-4)
    assert after["given"] == 220 and after["clients"] == 5


def test_the_first_verdict_on_a_picture_counts_and_a_later_flood_cannot_outvote_it(
    sessions: sessionmaker[Session],
) -> None:
    judge(sessions, predict(sessions, "photo"), right=True, client="203.0.113.5")
    flood = [judge(sessions, predict(sessions, "photo"), right=False, client=f"198.51.100.{i}") for i in range(30)]
    figures = stats(sessions)[V1]
    assert (figures["n"], figures["correct"], figures["accuracy"]) == (1, 1, 1.0)
    assert figures["clients"] == 1 and figures["given"] == 31
    with sessions() as session:
        assert not feedback_db.is_counted(session, session.get(Feedback, flood[0]))  # type: ignore[arg-type]


def test_each_version_counts_the_picture_once(sessions: sessionmaker[Session]) -> None:
    for version, right in ((V1, False), (V1, True), (V2, True), (V2, False)):
        judge(sessions, predict(sessions, "shared", version), right=right)
    figures = stats(sessions)
    assert figures[V1]["n"] == figures[V2]["n"] == 1
    assert figures[V1]["accuracy"] == 0.0 and figures[V2]["accuracy"] == 1.0  # each version's first verdict


def test_add_feedback_keeps_the_picture_and_the_client(sessions: sessionmaker[Session]) -> None:
    prediction_id = predict(sessions, "kept")
    feedback_id = judge(sessions, prediction_id, right=False, client="x" * 80)
    with sessions() as session:
        row = session.get(Feedback, feedback_id)
        assert row is not None and row.content_sha256 == sha("kept") and row.client == "x" * 64
        assert feedback_db.is_counted(session, row)
        with pytest.raises(feedback_db.AlreadyGiven):
            feedback_db.add_feedback(session, prediction_id, "cat", "203.0.113.1")
        with pytest.raises(KeyError):
            feedback_db.add_feedback(session, "f" * 32, "cat", None)


def test_rows_without_a_picture_count_each_alone(sessions: sessionmaker[Session]) -> None:
    """Feedback from before content hashes were kept (content_sha256 NULL) counts per prediction, as it did."""
    ids = [judge(sessions, predict(sessions, "old"), right=i == 0, client=None) for i in range(3)]
    with sessions() as session:
        for row in session.scalars(select(Feedback).where(Feedback.id.in_(ids))):
            row.content_sha256 = None
        session.commit()
    figures = stats(sessions)[V1]
    assert (figures["n"], figures["correct"], figures["clients"], figures["given"]) == (3, 1, 0, 3)


def test_the_window_counts_the_first_verdict_within_it(sessions: sessionmaker[Session]) -> None:
    early = judge(sessions, predict(sessions, "photo"), right=True)
    late = judge(sessions, predict(sessions, "photo"), right=False)
    with sessions() as session:
        session.get(Feedback, early).created_at = T0  # type: ignore[union-attr]
        session.get(Feedback, late).created_at = T0 + timedelta(hours=2)  # type: ignore[union-attr]
        session.commit()
    assert stats(sessions)[V1]["accuracy"] == 1.0
    assert stats(sessions, since=T0 + timedelta(hours=1))[V1]["accuracy"] == 0.0


def test_the_wilson_interval_is_over_pictures(sessions: sessionmaker[Session]) -> None:
    for i in range(12):
        picture = f"p{i}"
        judge(sessions, predict(sessions, picture), right=i % 4 != 0)  # 9 of 12 right
        for _ in range(3):  # repeats that do not count
            judge(sessions, predict(sessions, picture), right=i % 4 == 0)
    figures = stats(sessions)[V1]
    expected = binomtest(9, 12).proportion_ci(confidence_level=0.95, method="wilson")
    assert (figures["n"], figures["correct"], figures["given"]) == (12, 9, 48)
    assert figures["ci95"] == pytest.approx([expected.low, expected.high], abs=1e-3)


def test_no_feedback_reports_zero_counts(sessions: sessionmaker[Session]) -> None:
    predict(sessions, "unjudged")
    figures = stats(sessions)[V1]
    assert figures == {"n": 0, "correct": 0, "accuracy": None, "ci95": None, "pictures": 0, "clients": 0, "given": 0}
