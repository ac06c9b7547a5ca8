"""Retraining: start a job on the queue, watch it, cancel it; the job runs in `catdog worker`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from catdog.db import jobs, queries
from catdog.db.models import RetrainStatus
from catdog.jobs.retrain import check_training_data
from catdog.jobs.warm import read_status
from catdog.timefmt import iso_utc
from catdog.web.deps import AdminDep, QueueDep, RegistryDep, SessionDep, SettingsDep, StrictDigits
from catdog.web.openapi import error_responses

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["retraining"])


class RetrainRequest(BaseModel):
    backbone: str | None = Field(default=None, description="a registered backbone; default: production's")


@router.post(
    "/retrain",
    summary="Start retraining on the base set plus the uploads",
    dependencies=[AdminDep],
    status_code=202,
    responses=error_responses(
        400,
        401,
        403,
        409,
        413,
        503,
        e400="unknown backbone, or too few images per class",
        e409="a retraining job is already queued or running",
        e503="the job queue is unreachable",
    ),
)
def start_retrain(
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    registry: RegistryDep,
    body: Annotated[RetrainRequest | None, Body()] = None,
) -> JSONResponse:
    """202 with the job id; `is_retraining` is already true when this answers. 409 while a job is active."""
    backbone = body.backbone if body else None
    if backbone is not None:
        known = sorted({version.backbone for version in registry.versions()})
        if backbone not in known:
            raise HTTPException(
                400, f"unknown backbone {backbone!r}: retrain the backbone of a registered version: {', '.join(known)}"
            )
    jobs.sweep_stale_jobs(session, timedelta(seconds=settings.job_stale_seconds))
    counts = check_training_data(settings)  # NotEnoughData: 400
    job = jobs.create_job(session, {"backbone": backbone, "requested_counts": counts})  # JobConflict: 409
    try:
        queue.enqueue_retrain(job.id)
    except Exception as exc:  # the queue's storage is down: the job must not stay "queued" forever
        jobs.finish_job(session, job.id, RetrainStatus.FAILED, error=f"could not enqueue: {exc}")
        log.exception("could not enqueue job %s", job.id)
        raise HTTPException(503, f"the job queue is unreachable: {exc}".splitlines()[0]) from None
    return JSONResponse(
        {"job_id": job.id, "status": job.status, "status_url": "/api/retrain-status"},
        status_code=202,
        headers={"Location": "/api/retrain-status"},
    )


@router.get("/retrain-status", summary="The newest retraining job: phase, percent, ETA, result")
def retrain_status(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    jobs.sweep_stale_jobs(session, timedelta(seconds=settings.job_stale_seconds))
    summary = queries.retrain_summary(session)
    answer = {**summary, **jobs.job_dict(jobs.newest_job(session)), "timestamp": iso_utc()}
    # the idle worker's feature-cache warming: "ready" means a retrain pays no backbone pass
    answer["feature_cache"] = read_status(settings)
    return answer


@router.get("/retrain/jobs", summary="Retraining jobs, newest first")
def retrain_jobs(session: SessionDep, limit: Annotated[int, Query(ge=1, le=200), StrictDigits] = 20) -> dict[str, Any]:
    return {"jobs": [jobs.job_dict(job) for job in jobs.list_jobs(session, limit)]}


@router.post(
    "/retrain/{job_id}/cancel",
    summary="Cancel a queued or running job",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, 413, e404="no such job", e409="the job has ended, or is registering"),
)
def cancel_retrain(job_id: str, session: SessionDep) -> dict[str, Any]:
    job = jobs.request_cancel(session, job_id)  # UnknownJob: 404; JobFinished, TooLateToCancel: 409
    return {"job_id": job.id, "cancel_requested": True, "status": job.status}
