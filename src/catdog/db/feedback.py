"""Feedback rows and the per-version figures the monitoring page compares (A/B)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from catdog.db.models import Feedback, Prediction, iso_z


class AlreadyGiven(Exception):
    """The prediction already has feedback (one verdict per prediction keeps live accuracy honest)."""


def add_feedback(session: Session, prediction_id: str, correct_label: str) -> Feedback:
    """Record the right label for a prediction.

    Raises KeyError when the prediction is unknown, AlreadyGiven when it already has feedback.
    """
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise KeyError(prediction_id)
    if session.scalar(select(Feedback.id).where(Feedback.prediction_id == prediction_id).limit(1)) is not None:
        raise AlreadyGiven(f"prediction {prediction_id} already has feedback")
    row = Feedback(
        prediction_id=prediction_id,
        model_version=prediction.model_version,
        predicted_class=prediction.predicted_class,
        correct_label=correct_label,
    )
    session.add(row)
    session.commit()
    return row


def get_feedback(session: Session, feedback_id: str) -> Feedback | None:
    return session.get(Feedback, feedback_id)


def content_of(session: Session, prediction_id: str) -> str | None:
    """The sha256 of the bytes a prediction was made on, or None when unknown."""
    return session.scalar(select(Prediction.content_sha256).where(Prediction.id == prediction_id))


def mark_added(session: Session, row: Feedback, sha256: str) -> None:
    row.upload_sha256 = sha256
    session.commit()


def feedback_dict(row: Feedback) -> dict[str, Any]:
    return {
        "feedback_id": row.id,
        "prediction_id": row.prediction_id,
        "model_version": row.model_version,
        "predicted_class": row.predicted_class,
        "correct_label": row.correct_label,
        "correct": row.predicted_class == row.correct_label,
        "added_to_training": row.upload_sha256,
        "created_at": iso_z(row.created_at),
    }


def version_stats(session: Session, since: datetime | None = None) -> list[dict[str, Any]]:
    """Per model version: predictions, mean confidence, latency p50 (ms), and live accuracy from feedback.

    since: only predictions and feedback from then on (timezone-aware); None: all time. Accuracy is
    correct / n over the feedback given, with a 95% Wilson interval (Wilson 1927), None without feedback.
    """
    predictions = select(
        Prediction.model_version, func.count(), func.avg(Prediction.confidence), func.avg(Prediction.latency_ms)
    ).group_by(Prediction.model_version)
    votes = select(
        Feedback.model_version,
        func.count(),
        func.sum(case((Feedback.predicted_class == Feedback.correct_label, 1), else_=0)),
    ).group_by(Feedback.model_version)
    if since is not None:
        predictions = predictions.where(Prediction.created_at >= since)
        votes = votes.where(Feedback.created_at >= since)
    rows: dict[str, dict[str, Any]] = {}
    for version, count, confidence, latency in session.execute(predictions):
        rows[version] = {
            "model_version": version,
            "predictions": int(count),
            "mean_confidence": None if confidence is None else round(float(confidence), 4),
            "mean_latency_ms": None if latency is None else round(float(latency), 2),
            "feedback": _accuracy(0, 0),
        }
    for version, n, correct in session.execute(votes):
        entry = rows.setdefault(
            version,
            {"model_version": version, "predictions": 0, "mean_confidence": None, "mean_latency_ms": None},
        )
        entry["feedback"] = _accuracy(int(n), int(correct or 0))
    return sorted(rows.values(), key=lambda row: -row["predictions"])


def _accuracy(n: int, correct: int) -> dict[str, Any]:
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "ci95": None}
    z, p = 1.96, correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": round(p, 4),
        "ci95": [round(centre - half, 4), round(centre + half, 4)],
    }
