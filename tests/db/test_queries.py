"""Queries on known rows and on an empty database, on SQLite and PostgreSQL (session time zone not UTC)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from catdog.db import queries
from catdog.db.models import Prediction, RetrainJob

from .conftest import record

NOW = datetime(2025, 3, 1, 12, 30, 30, tzinfo=UTC)
KOLKATA = ZoneInfo("Asia/Kolkata")


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2025, 3, 1, hour, minute, second, tzinfo=UTC)


def _add(sessions: sessionmaker[Session], *records: Any) -> None:
    with sessions() as session:
        session.add_all(Prediction(**one.row()) for one in records)
        session.commit()


KNOWN = [
    # outside the 5-minute window (12:26:00 .. 12:30:30): counted in the total only
    dict(created_at=at(12, 20), predicted_class="cat", confidence=0.6, p_dog=0.4),
    dict(created_at=at(12, 30, 31), latency_ms=999.0),  # after `now`
    # inside
    dict(created_at=at(12, 26), latency_ms=5.0, confidence=0.5, p_dog=0.5, predicted_class="cat", cached=True,
         batch_size=None, is_pet=None, pet_score=None, request_id="r0"),
    dict(created_at=at(12, 28, 10), latency_ms=10.0, confidence=0.55, p_dog=0.55, endpoint="batch", batch_size=4,
         is_pet=True, request_id="r1"),
    dict(created_at=at(12, 28, 20), latency_ms=20.0, confidence=0.97, p_dog=0.97, endpoint="batch", batch_size=4,
         is_pet=False, request_id="r1"),
    dict(created_at=at(12, 28, 30), latency_ms=30.0, confidence=1.0, p_dog=1.0, endpoint="batch", batch_size=4,
         is_pet=True, request_id="r1"),
    dict(created_at=at(12, 28, 40).astimezone(KOLKATA), latency_ms=100.0, confidence=0.74, p_dog=0.26,
         predicted_class="cat", batch_size=1, is_pet=False, request_id=None),
    dict(created_at=NOW, latency_ms=7.0, confidence=0.8, p_dog=0.8, cached=True, batch_size=None, is_pet=True,
         request_id="r2"),
]  # fmt: skip


@pytest.fixture
def known(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    _add(sessions, *(record(**values) for values in KNOWN))
    return sessions


def z(hour: int, minute: int, second: int = 0) -> str:
    """The answer's form of at(hour, minute, second): ISO 8601 UTC with a Z, whole seconds."""
    return f"2025-03-01T{hour:02d}:{minute:02d}:{second:02d}Z"


def _minute(summary: Any, hour: int, minute: int) -> dict[str, Any]:
    key = z(hour, minute)
    return next(row for row in summary["per_minute"] if row["minute"] == key)


def test_monitoring_summary_on_known_rows(known: sessionmaker[Session]) -> None:
    with known() as session:
        summary = queries.monitoring_summary(session, NOW, minutes=5)
    assert summary["window"] == {"start": z(12, 26), "end": z(12, 30, 30), "minutes": 5}
    assert (summary["total_predictions"], summary["window_predictions"]) == (8, 6)
    assert [row["minute"] for row in summary["per_minute"]] == [z(12, m) for m in range(26, 31)]
    assert [row["predictions"] for row in summary["per_minute"]] == [1, 0, 4, 0, 1]
    assert [row["requests"] for row in summary["per_minute"]] == [1, 0, 2, 0, 1]
    busy = _minute(summary, 12, 28)
    assert busy["latency_p50_ms"] == pytest.approx(np.percentile([10, 20, 30, 100], 50))  # 25
    assert busy["latency_p95_ms"] == pytest.approx(np.percentile([10, 20, 30, 100], 95))  # 89.5
    assert _minute(summary, 12, 27)["latency_p50_ms"] is None
    assert _minute(summary, 12, 30)["latency_p95_ms"] == 7.0
    window = [5, 10, 20, 30, 100, 7]
    assert summary["latency"] == {
        "p50_ms": pytest.approx(np.percentile(window, 50)),
        "p95_ms": pytest.approx(np.percentile(window, 95)),
        "mean_ms": pytest.approx(np.mean(window), abs=1e-3),
        "rows_read": 6,
        "truncated": False,
    }
    assert summary["classes"] == {"cat": 2, "dog": 4}
    assert summary["endpoints"] == {"predict": 3, "batch": 3}
    histogram = summary["confidence_histogram"]
    assert histogram["edges"] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
    assert histogram["counts"] == [1, 1, 0, 0, 1, 0, 1, 0, 0, 2]  # [a, b) bins, the last one closed
    assert summary["cache"] == {"hits": 2, "misses": 4, "hit_rate": pytest.approx(1 / 3)}
    assert summary["batch_sizes"] == [{"size": 1, "predictions": 1}, {"size": 4, "predictions": 3}]
    assert summary["not_a_pet"] == {"flagged": 2, "checked": 5, "share": pytest.approx(0.4)}


def test_monitoring_summary_is_the_same_whatever_the_time_zone_of_now(known: sessionmaker[Session]) -> None:
    with known() as session:
        in_utc = queries.monitoring_summary(session, NOW, minutes=5)
        in_kolkata = queries.monitoring_summary(session, NOW.astimezone(KOLKATA), minutes=5)
    assert in_kolkata == in_utc
    assert in_utc["generated_at"] == "2025-03-01T12:30:30Z"


def test_latency_rows_are_bounded_and_the_counts_stay_exact(known: sessionmaker[Session]) -> None:
    with known() as session:
        summary = queries.monitoring_summary(session, NOW, minutes=5, latency_rows=2)
    assert summary["latency"]["rows_read"] == 2 and summary["latency"]["truncated"] is True
    assert summary["latency"]["p50_ms"] == pytest.approx(53.5)  # the newest two: 7 and 100
    assert [row["predictions"] for row in summary["per_minute"]] == [1, 0, 4, 0, 1]


def test_monitoring_summary_on_an_empty_database(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        summary = queries.monitoring_summary(session, NOW, minutes=3)
    assert summary["per_minute"] == [
        {
            "minute": z(12, m),
            "predictions": 0,
            "requests": 0,
            "latency_p50_ms": None,
            "latency_p95_ms": None,
        }
        for m in (28, 29, 30)
    ]
    assert summary["latency"] == {"p50_ms": None, "p95_ms": None, "mean_ms": None, "rows_read": 0, "truncated": False}
    assert (summary["total_predictions"], summary["window_predictions"]) == (0, 0)
    assert summary["classes"] == {"cat": 0, "dog": 0}
    assert summary["confidence_histogram"]["counts"] == [0] * 10
    assert summary["cache"] == {"hits": 0, "misses": 0, "hit_rate": None}
    assert summary["batch_sizes"] == []
    assert summary["not_a_pet"] == {"flagged": 0, "checked": 0, "share": None}


def test_monitoring_summary_refuses_a_naive_now(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(ValueError, match="timezone-aware"):
        queries.monitoring_summary(session, datetime(2025, 3, 1, 12, 0))


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 100):
        values = sorted(rng.exponential(20, size).tolist())
        for q in (0, 50, 95, 100):
            assert queries.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert queries.percentile([], 50) is None


def test_count_predictions(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert queries.count_predictions(session) == 0
    _add(sessions, record(), record())
    with sessions() as session:
        assert queries.count_predictions(session) == 2


def test_retrain_summary(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert queries.retrain_summary(session) == {"is_retraining": False, "total_retrains": 0, "last_retrain": None}
        session.add_all(
            [
                RetrainJob(status="succeeded", finished_at=datetime(2025, 3, 1, 12, 0, tzinfo=KOLKATA)),  # 06:30 UTC
                RetrainJob(status="succeeded", finished_at=at(11, 0)),
                RetrainJob(status="failed", finished_at=at(12, 0)),
            ]
        )
        session.commit()
        assert queries.retrain_summary(session) == {
            "is_retraining": False,
            "total_retrains": 2,
            "last_retrain": "2025-03-01T11:00:00Z",
        }
        session.add(RetrainJob(status="running", started_at=at(12, 5)))
        session.commit()
        assert queries.retrain_summary(session)["is_retraining"] is True
        job = session.scalars(select(RetrainJob).where(RetrainJob.status == "running")).one()
        assert job.created_at.tzinfo is UTC and job.started_at == at(12, 5)


def test_recent_p_dog(sessions: sessionmaker[Session]) -> None:
    _add(
        sessions,
        record(p_dog=0.1, confidence=0.9, predicted_class="cat", created_at=at(10, 0)),
        record(p_dog=0.7, confidence=0.7, created_at=at(10, 1), model_version="other"),
        record(p_dog=0.8, confidence=0.8, created_at=at(10, 2), cached=True, batch_size=None),
        record(p_dog=0.9, confidence=0.9, created_at=at(10, 3)),
    )
    with sessions() as session:
        assert queries.recent_p_dog(session, 10) == [0.9, 0.7, 0.1]  # newest first, cache hits left out
        assert queries.recent_p_dog(session, 2) == [0.9, 0.7]
        assert queries.recent_p_dog(session, 10, "vgg16-test") == [0.9, 0.1]
        assert queries.recent_p_dog(session, 10, include_cached=True) == [0.9, 0.8, 0.7, 0.1]
        assert queries.recent_p_dog(session, 10, "missing") == []


def _report(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        model_version="a", window_size=500, ks_statistic=0.12, ks_p_value=0.03, psi=0.21, prediction_drift=True
    )
    return values | overrides


def test_drift_reports(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert queries.latest_drift_report(session) is None
        first = queries.save_drift_report(session, **_report(created_at=at(9, 0).astimezone(KOLKATA)))
        queries.save_drift_report(
            session,
            **_report(
                model_version="b", created_at=at(10, 0), domain_auc=0.8, domain_threshold=0.7, feature_drift=True
            ),
            details={"reference": "test set", "bins": [0.1, 0.2]},
        )
    assert first["created_at"] == "2025-03-01T09:00:00Z"
    assert first["details"] == {} and first["domain_auc"] is None and first["feature_drift"] is None
    with sessions() as session:
        latest = queries.latest_drift_report(session)
        assert latest is not None
        assert latest["model_version"] == "b" and latest["created_at"] == "2025-03-01T10:00:00Z"
        assert (latest["domain_auc"], latest["domain_threshold"], latest["feature_drift"]) == (0.8, 0.7, True)
        assert latest["details"] == {"reference": "test set", "bins": [0.1, 0.2]}
        only_a = queries.latest_drift_report(session, "a")
        assert only_a is not None and only_a["id"] == first["id"] and only_a["psi"] == 0.21


def test_drift_reports_refuse_non_finite_numbers(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        with pytest.raises(ValueError, match="ks_p_value"):
            queries.save_drift_report(session, **_report(ks_p_value=math.nan))
        with pytest.raises((ValueError, StatementError)):
            queries.save_drift_report(session, **_report(), details={"x": math.inf})
        session.rollback()
        assert queries.latest_drift_report(session) is None


def test_naive_times_are_refused_in_queries(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(StatementError, match="naive datetime"):
        session.execute(select(Prediction).where(Prediction.created_at > datetime(2025, 1, 1))).all()


def test_times_come_back_in_utc(sessions: sessionmaker[Session]) -> None:
    moment = datetime(2025, 7, 1, 23, 59, 59, 123456, tzinfo=KOLKATA)
    _add(sessions, record(created_at=moment))
    with sessions() as session:
        stored = session.scalars(select(Prediction.created_at)).one()
        assert stored == moment and stored.tzinfo is UTC
        assert stored.isoformat() == "2025-07-01T18:29:59.123456+00:00"
        later = session.scalars(select(Prediction.id).where(Prediction.created_at >= moment - timedelta(0))).all()
        assert len(later) == 1
