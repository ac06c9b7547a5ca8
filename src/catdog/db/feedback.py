"""Feedback rows and the per-version figures the monitoring page compares (A/B).

Live accuracy counts each picture once per model version: of all the verdicts on the same bytes
(feedback.content_sha256, the prediction's content hash) answered by the same version, only the
first one counts. A flood of verdicts on one picture, from one client or many, moves the counted
figure by at most that one picture; the raw count of verdicts is reported beside it (`given`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, distinct, func, literal, select
from sqlalchemy.orm import Session

from catdog.db.models import Feedback, Prediction
from catdog.errors import Conflict, NotFound
from catdog.timefmt import iso_utc_or_none


class AlreadyGiven(Conflict):
    """The prediction already has feedback (one verdict per prediction keeps live accuracy honest; 409)."""


class UnknownPrediction(NotFound):
    """The database has no prediction with this id (yet: records are written in batches); 404, a KeyError."""


def add_feedback(session: Session, prediction_id: str, correct_label: str, client: str | None = None) -> Feedback:
    """Record the right label for a prediction, with the picture it judged and who sent it.

    client: the sender's address (proxy-aware, catdog.web.ratelimit.client_address), cut to 64
    characters; None when unknown. Raises UnknownPrediction (a KeyError) when the prediction is unknown, AlreadyGiven
    when it already has feedback.
    """
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise UnknownPrediction(f"no prediction {prediction_id!r}")
    if session.scalar(select(Feedback.id).where(Feedback.prediction_id == prediction_id).limit(1)) is not None:
        raise AlreadyGiven(f"prediction {prediction_id} already has feedback")
    row = Feedback(
        prediction_id=prediction_id,
        model_version=prediction.model_version,
        predicted_class=prediction.predicted_class,
        correct_label=correct_label,
        content_sha256=prediction.content_sha256,
        client=None if client is None else client[:64],
    )
    session.add(row)
    session.commit()
    return row


def is_counted(session: Session, row: Feedback) -> bool:
    """Whether the row is the verdict live accuracy counts for its (version, picture): the first one given."""
    first = session.scalar(
        select(Feedback.id)
        .where(Feedback.model_version == row.model_version, _picture() == (row.content_sha256 or row.prediction_id))
        .order_by(Feedback.created_at, Feedback.id)
        .limit(1)
    )
    return first == row.id


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
        "created_at": iso_utc_or_none(row.created_at),
    }


def version_stats(session: Session, since: datetime | None = None) -> list[dict[str, Any]]:
    """Per model version: predictions, mean confidence, latency p50 (ms), and live accuracy from feedback.

    since: only predictions and feedback from then on (timezone-aware); None: all time.
    Live accuracy is over pictures, not verdicts: per (version, picture) the first verdict given
    (in the window) counts, later ones on the same picture are ignored, so that a flood on one
    picture weighs as one picture (and an honest verdict already given cannot be outvoted). Each
    version's `feedback` block: n and correct (counted pictures and the right ones), accuracy
    (correct / n, None without feedback), ci95 (95% Wilson score interval over the n pictures,
    Wilson 1927), pictures (= n), clients (distinct sender addresses of the counted verdicts; rows
    from before addresses were kept are not counted there) and given (every verdict received).
    """
    predictions = select(
        Prediction.model_version, func.count(), func.avg(Prediction.confidence), func.avg(Prediction.latency_ms)
    ).group_by(Prediction.model_version)
    ranked = select(
        Feedback.model_version.label("model_version"),
        Feedback.client.label("client"),
        case((Feedback.predicted_class == Feedback.correct_label, 1), else_=0).label("right"),
        func.row_number()
        .over(partition_by=(Feedback.model_version, _picture()), order_by=(Feedback.created_at, Feedback.id))
        .label("rank"),
    )
    if since is not None:
        predictions = predictions.where(Prediction.created_at >= since)
        ranked = ranked.where(Feedback.created_at >= since)
    verdicts = ranked.subquery()
    votes = select(
        verdicts.c.model_version,
        func.count(),
        func.sum(case((verdicts.c.rank == 1, verdicts.c.right), else_=0)),
        func.sum(case((verdicts.c.rank == 1, 1), else_=0)),
        func.count(distinct(case((verdicts.c.rank == 1, verdicts.c.client), else_=literal(None)))),
    ).group_by(verdicts.c.model_version)
    rows: dict[str, dict[str, Any]] = {}
    for version, count, confidence, latency in session.execute(predictions):
        rows[version] = {
            "model_version": version,
            "predictions": int(count),
            "mean_confidence": None if confidence is None else round(float(confidence), 4),
            "mean_latency_ms": None if latency is None else round(float(latency), 2),
            "feedback": _accuracy(0, 0),
        }
    for version, given, correct, pictures, clients in session.execute(votes):
        entry = rows.setdefault(
            version,
            {"model_version": version, "predictions": 0, "mean_confidence": None, "mean_latency_ms": None},
        )
        entry["feedback"] = _accuracy(int(pictures or 0), int(correct or 0), int(clients or 0), int(given))
    return sorted(rows.values(), key=lambda row: -row["predictions"])


def _picture() -> ColumnElement[str]:
    """What a verdict judged: the picture's content hash; a row without one stands for itself (its prediction)."""
    return func.coalesce(Feedback.content_sha256, Feedback.prediction_id)


def _accuracy(n: int, correct: int, clients: int = 0, given: int = 0) -> dict[str, Any]:
    """correct of n pictures as accuracy with its 95% Wilson score interval (Wilson 1927, z = 1.96)."""
    counts = {"pictures": n, "clients": clients, "given": given}
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "ci95": None, **counts}
    z, p = 1.96, correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": round(p, 4),
        "ci95": [round(centre - half, 4), round(centre + half, 4)],
        **counts,
    }
