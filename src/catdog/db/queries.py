"""Read and write helpers over a Session: counters for /api/status, the monitoring summary, drift reports.

Every result is JSON-ready (times as ISO 8601 UTC strings with a Z, catdog.timefmt). Percentiles
are computed in Python on a bounded number of rows, the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.orm import Session

from catdog import CLASS_NAMES
from catdog.db.models import ACTIVE_RETRAIN_STATUSES, DriftReport, Prediction, RetrainJob, RetrainStatus
from catdog.db.writer import ENDPOINTS
from catdog.timefmt import iso_utc, iso_utc_or_none

# Confidence (probability of the predicted class) is in [0.5, 1]: 10 bins of 0.05.
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
LATENCY_ROWS = 50_000  # most rows read for latency percentiles in one summary


class RetrainSummary(TypedDict):
    is_retraining: bool  # a job is queued or running
    total_retrains: int  # jobs that succeeded
    last_retrain: str | None  # when the last successful job finished, ISO 8601 UTC ("...Z")


class MinuteStats(TypedDict):
    minute: str  # start of the minute, ISO 8601 UTC ("...Z")
    predictions: int  # images predicted
    requests: int  # distinct request ids (a prediction without one counts alone)
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class LatencyStats(TypedDict):
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    rows_read: int
    truncated: bool  # more rows in the window than were read: the newest were used


class Histogram(TypedDict):
    edges: list[float]
    counts: list[int]


class CacheStats(TypedDict):
    hits: int
    misses: int
    hit_rate: float | None  # None when there were no predictions


class BatchSizeCount(TypedDict):
    size: int  # images in one ONNX Runtime run
    predictions: int  # predictions served from runs of that size


class PetStats(TypedDict):
    flagged: int  # is_pet false
    checked: int  # is_pet known
    share: float | None


class GroupStats(TypedDict):
    classes: dict[str, int]
    endpoints: dict[str, int]
    confidence_histogram: Histogram
    cache: CacheStats
    batch_sizes: list[BatchSizeCount]
    not_a_pet: PetStats


class MonitoringSummary(GroupStats):
    generated_at: str
    window: dict[str, Any]  # {"start": iso, "end": iso, "minutes": int}
    total_predictions: int  # all time
    window_predictions: int
    per_minute: list[MinuteStats]
    latency: LatencyStats


# --- counters ------------------------------------------------------------------------------------
def count_predictions(session: Session) -> int:
    """How many predictions were recorded, all time (every worker's)."""
    return session.scalar(select(func.count()).select_from(Prediction)) or 0


def retrain_summary(session: Session) -> RetrainSummary:
    """is_retraining, total_retrains (succeeded jobs) and last_retrain (ISO 8601 UTC or None)."""
    active = session.scalar(select(exists().where(RetrainJob.status.in_(ACTIVE_RETRAIN_STATUSES))))
    succeeded = RetrainJob.status == RetrainStatus.SUCCEEDED.value
    total, last = session.execute(select(func.count(), func.max(RetrainJob.finished_at)).where(succeeded)).one()
    return {"is_retraining": bool(active), "total_retrains": int(total), "last_retrain": iso_utc_or_none(last)}


# --- monitoring ------------------------------------------------------------------------------------
def monitoring_summary(
    session: Session, now: datetime, minutes: int = 60, *, latency_rows: int = LATENCY_ROWS
) -> MonitoringSummary:
    """Figures for the monitoring page over the `minutes` minutes up to `now` (timezone-aware).

    The window starts at the beginning of the minute `minutes - 1` minutes before `now`'s and ends
    at `now`; `per_minute` lists every minute in it, oldest first, zero minutes included.
    Latencies are in ms; percentiles interpolate linearly over at most `latency_rows` rows.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if minutes < 1 or latency_rows < 1:
        raise ValueError("minutes and latency_rows must be at least 1")
    end = now.astimezone(UTC)
    start = end.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    window = and_(Prediction.created_at >= start, Prediction.created_at <= end)
    minute = _minute_text(session)
    counts = _per_minute_counts(session, window, minute)
    latencies, truncated = _latencies(session, window, minute, latency_rows)
    groups = _group_stats(_grouped_counts(session, window))
    return {
        "generated_at": iso_utc(end),
        "window": {"start": iso_utc(start), "end": iso_utc(end), "minutes": minutes},
        "total_predictions": count_predictions(session),
        "window_predictions": sum(n for n, _ in counts.values()),
        "per_minute": _minute_rows(start, minutes, counts, latencies),
        "latency": _latency_stats(latencies, truncated),
        "classes": groups["classes"],
        "endpoints": groups["endpoints"],
        "confidence_histogram": groups["confidence_histogram"],
        "cache": groups["cache"],
        "batch_sizes": groups["batch_sizes"],
        "not_a_pet": groups["not_a_pet"],
    }


def _minute_text(session: Session) -> ColumnElement[str]:
    """created_at's UTC minute as text 'YYYY-MM-DD HH:MM', on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", Prediction.created_at), "YYYY-MM-DD HH24:MI")
    return func.strftime("%Y-%m-%d %H:%M", Prediction.created_at)


def _per_minute_counts(
    session: Session, window: ColumnElement[bool], minute: ColumnElement[str]
) -> dict[str, tuple[int, int]]:
    """Minute text -> (predictions, distinct requests), exact, counted by the database."""
    bucket = minute.label("minute")
    request = func.coalesce(Prediction.request_id, Prediction.id)
    query = select(bucket, func.count(), func.count(request.distinct())).where(window).group_by(bucket)
    return {row[0]: (int(row[1]), int(row[2])) for row in session.execute(query)}


def _latencies(
    session: Session, window: ColumnElement[bool], minute: ColumnElement[str], limit: int
) -> tuple[list[tuple[str, float]], bool]:
    """(minute text, latency ms) of the newest `limit` + 1 rows in the window, and whether there were more."""
    query = select(minute, Prediction.latency_ms).where(window).order_by(Prediction.created_at.desc()).limit(limit + 1)
    rows = [(str(m), float(ms)) for m, ms in session.execute(query)]
    return rows[:limit], len(rows) > limit


def _minute_rows(
    start: datetime, minutes: int, counts: dict[str, tuple[int, int]], latencies: list[tuple[str, float]]
) -> list[MinuteStats]:
    by_minute: dict[str, list[float]] = defaultdict(list)
    for key, ms in latencies:
        by_minute[key].append(ms)
    rows: list[MinuteStats] = []
    for index in range(minutes):
        moment = start + timedelta(minutes=index)
        key = moment.strftime("%Y-%m-%d %H:%M")  # the database's grouping key (_minute_text), never answered
        values = sorted(by_minute.get(key, []))
        predictions, requests = counts.get(key, (0, 0))
        rows.append(
            {
                "minute": iso_utc(moment),
                "predictions": predictions,
                "requests": requests,
                "latency_p50_ms": _ms(percentile(values, 50)),
                "latency_p95_ms": _ms(percentile(values, 95)),
            }
        )
    return rows


def _latency_stats(latencies: list[tuple[str, float]], truncated: bool) -> LatencyStats:
    values = sorted(ms for _, ms in latencies)
    return {
        "p50_ms": _ms(percentile(values, 50)),
        "p95_ms": _ms(percentile(values, 95)),
        "mean_ms": _ms(math.fsum(values) / len(values)) if values else None,
        "rows_read": len(values),
        "truncated": truncated,
    }


def _ms(value: float | None) -> float | None:
    """Milliseconds rounded to the microsecond."""
    return None if value is None else round(value, 3)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of ascending values, linear interpolation (numpy's default); None if empty."""
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


_GROUP_COLUMNS = ("predicted_class", "endpoint", "cached", "batch_size", "is_pet", "confidence_bin")


def _grouped_counts(session: Session, window: ColumnElement[bool]) -> list[tuple[Any, ...]]:
    """Counts grouped by class, endpoint, cached, batch size, is_pet and confidence bin (one query)."""
    edges = CONFIDENCE_EDGES[1:-1]
    confidence_bin = case(*[(Prediction.confidence < edge, i) for i, edge in enumerate(edges)], else_=len(edges))
    inner = select(
        Prediction.predicted_class,
        Prediction.endpoint,
        Prediction.cached,
        Prediction.batch_size,
        Prediction.is_pet,
        confidence_bin.label("confidence_bin"),
    ).where(window)
    sub = inner.subquery()
    keys = [sub.c[name] for name in _GROUP_COLUMNS]
    return [tuple(row) for row in session.execute(select(*keys, func.count()).group_by(*keys))]


def _group_stats(groups: Iterable[tuple[Any, ...]]) -> GroupStats:
    classes: Counter[str] = Counter({name: 0 for name in CLASS_NAMES})
    endpoints: Counter[str] = Counter({name: 0 for name in ENDPOINTS})
    bins = [0] * (len(CONFIDENCE_EDGES) - 1)
    batch_sizes: Counter[int] = Counter()
    hits = misses = flagged = checked = 0
    for predicted_class, endpoint, cached, batch_size, is_pet, confidence_bin, count in groups:
        classes[predicted_class] += count
        endpoints[endpoint] += count
        bins[int(confidence_bin)] += count
        if cached:
            hits += count
        else:
            misses += count
            if batch_size is not None:
                batch_sizes[int(batch_size)] += count
        if is_pet is not None:
            checked += count
            flagged += count if not is_pet else 0
    return {
        "classes": dict(classes),
        "endpoints": dict(endpoints),
        "confidence_histogram": {"edges": list(CONFIDENCE_EDGES), "counts": bins},
        "cache": {"hits": hits, "misses": misses, "hit_rate": _share(hits, hits + misses)},
        "batch_sizes": [{"size": size, "predictions": n} for size, n in sorted(batch_sizes.items())],
        "not_a_pet": {"flagged": flagged, "checked": checked, "share": _share(flagged, checked)},
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- drift -------------------------------------------------------------------------------------------
def recent_p_dog(
    session: Session, limit: int, model_version: str | None = None, *, include_cached: bool = False
) -> list[float]:
    """P(dog) of the newest `limit` predictions, newest first, optionally of one model version.

    Cache hits are left out unless asked for: a load test repeating one image would otherwise
    look like drift.
    """
    query = select(Prediction.p_dog).order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit)
    if model_version is not None:
        query = query.where(Prediction.model_version == model_version)
    if not include_cached:
        query = query.where(Prediction.cached.is_(False))
    return [float(value) for value in session.scalars(query)]


def save_drift_report(
    session: Session,
    *,
    model_version: str,
    window_size: int,
    ks_statistic: float,
    ks_p_value: float,
    psi: float,
    prediction_drift: bool,
    domain_auc: float | None = None,
    domain_threshold: float | None = None,
    feature_drift: bool | None = None,
    details: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """Store one drift report and commit; returns it as saved. Numbers must be finite (ValueError)."""
    numbers: dict[str, float | None] = {"ks_statistic": ks_statistic, "ks_p_value": ks_p_value, "psi": psi}
    numbers |= {"domain_auc": domain_auc, "domain_threshold": domain_threshold}
    for name, value in numbers.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"drift report {name} must be a finite number, got {value!r}")
    report = DriftReport(
        model_version=model_version,
        window_size=window_size,
        prediction_drift=prediction_drift,
        feature_drift=feature_drift,
        details=details or {},
        **{name: None if value is None else float(value) for name, value in numbers.items()},
    )
    if created_at is not None:
        report.created_at = created_at
    session.add(report)
    session.commit()
    return _drift_dict(report)


def latest_drift_report(session: Session, model_version: str | None = None) -> dict[str, Any] | None:
    """The newest drift report (of one model version if given), or None."""
    query = select(DriftReport).order_by(DriftReport.created_at.desc(), DriftReport.id.desc()).limit(1)
    if model_version is not None:
        query = query.where(DriftReport.model_version == model_version)
    report = session.scalars(query).first()
    return None if report is None else _drift_dict(report)


def _drift_dict(report: DriftReport) -> dict[str, Any]:
    """The report's columns, JSON-ready (created_at as ISO 8601 UTC, "...Z")."""
    return {
        "id": report.id,
        "created_at": iso_utc(report.created_at),
        "model_version": report.model_version,
        "window_size": report.window_size,
        "ks_statistic": report.ks_statistic,
        "ks_p_value": report.ks_p_value,
        "psi": report.psi,
        "prediction_drift": report.prediction_drift,
        "domain_auc": report.domain_auc,
        "domain_threshold": report.domain_threshold,
        "feature_drift": report.feature_drift,
        "details": dict(report.details),
    }
