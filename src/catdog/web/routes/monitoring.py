"""Monitoring: Prometheus exposition, the dashboard's figures, drift reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from catdog.db import feedback as feedback_db
from catdog.db import queries
from catdog.registry import Registry
from catdog.web import metrics
from catdog.web.deps import KnownRegistryDep, MonitorDep, ServiceDep, SessionDep, StrictDigits
from catdog.web.monitor import DriftMonitor, system_health

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", summary="Prometheus exposition of every worker process", response_class=Response)
def prometheus(request: Request) -> Response:
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.get("/api/monitoring", summary="The monitoring page's figures over the last minutes")
def monitoring(
    session: SessionDep,
    service: ServiceDep,
    monitor: MonitorDep,
    registry: KnownRegistryDep,
    minutes: Annotated[int, Query(ge=1, le=1440), StrictDigits] = 60,
) -> dict[str, Any]:
    summary = queries.monitoring_summary(session, datetime.now(UTC), minutes)
    drift = _latest_drift(monitor, session)
    return {
        **summary,
        "versions": _versions(registry, session),
        "drift": drift,
        "drift_reason": None if drift else _no_drift_reason(monitor),
        "system": system_health(service.state.started_at),
        "queue_depth": service.in_flight,
    }


@router.get("/api/drift", summary="The latest drift report (refresh=true computes one now)")
async def drift(session: SessionDep, monitor: MonitorDep, refresh: bool = False) -> dict[str, Any]:
    if refresh and monitor is not None:
        await run_in_threadpool(monitor.check)
    report = _latest_drift(monitor, session)
    return report or {"drift": None, "summary": "no drift report yet: it needs predictions and the model's reference"}


def _versions(registry: Registry | None, session: Session) -> list[dict[str, Any]]:
    """Per served model version, all time: predictions, confidence, latency, live accuracy from feedback."""
    numbers = {v.model_version: v.version for v in registry.versions()} if registry is not None else {}
    rows = feedback_db.version_stats(session)
    for row in rows:
        row["registry_version"] = numbers.get(row["model_version"])
    return rows


def _no_drift_reason(monitor: DriftMonitor | None) -> str:
    if monitor is not None and monitor.reference_error:
        return str(monitor.reference_error)
    return "no drift check yet: one runs every CATDOG_DRIFT_INTERVAL_SECONDS once predictions arrive"


def _latest_drift(monitor: DriftMonitor | None, session: Session) -> dict[str, Any] | None:
    """The full report: this worker's newest, else the newest stored by any worker."""
    if monitor is not None and monitor.latest is not None:
        return dict(monitor.latest)
    stored = queries.latest_drift_report(session)
    return None if stored is None else {**(stored.get("details") or {}), "created_at": stored.get("created_at")}
