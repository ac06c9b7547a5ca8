"""Retraining jobs in the database: the row is the job's source of truth.

The job queue (Huey) delivers a message at most once and knows nothing of progress, so every
state change goes through these functions: create (at most one active job, enforced by the
unique `active_slot`), claim (queued -> running, once), progress and heartbeat, cancel, finish,
and the sweeper that fails a running job whose worker stopped sending heartbeats.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catdog.db.models import (
    ACTIVE_RETRAIN_STATUSES,
    FINISHED_RETRAIN_STATUSES,
    RetrainJob,
    RetrainStatus,
    utcnow,
)
from catdog.errors import Conflict, NotFound
from catdog.timefmt import iso_utc_or_none


class JobConflict(Conflict):
    """A retraining job is already queued or running (the API answers 409)."""

    def __init__(self, active_id: str | None) -> None:
        super().__init__(f"a retraining job is already running (job {active_id}); wait for it or cancel it")
        self.active_id = active_id


class JobFinished(Conflict):
    """The job has already finished; it cannot be cancelled (the API answers 409)."""


class TooLateToCancel(Conflict):
    """The job is registering its version: past that point it completes (the API answers 409)."""


class UnknownJob(NotFound):
    """No job with this id (the API answers 404); a KeyError."""


IRREVOCABLE_PHASES = ("registering",)  # a job in these phases completes; a cancel is refused


def create_job(session: Session, params: dict[str, Any] | None = None) -> RetrainJob:
    """Insert a queued job and commit. Raises JobConflict when another job is queued or running."""
    job = RetrainJob(status=RetrainStatus.QUEUED.value, phase="queued", active_slot=1, params=params or {})
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        active = active_job(session)
        raise JobConflict(active.id if active else None) from None
    return job


def active_job(session: Session) -> RetrainJob | None:
    return session.scalars(select(RetrainJob).where(RetrainJob.status.in_(ACTIVE_RETRAIN_STATUSES))).first()


def get_job(session: Session, job_id: str) -> RetrainJob | None:
    """The job as the database has it now (bulk updates bypass the session's identity map)."""
    return session.get(RetrainJob, job_id, populate_existing=True)


def newest_job(session: Session) -> RetrainJob | None:
    return session.scalars(select(RetrainJob).order_by(RetrainJob.created_at.desc()).limit(1)).first()


def list_jobs(session: Session, limit: int = 20) -> list[RetrainJob]:
    return list(session.scalars(select(RetrainJob).order_by(RetrainJob.created_at.desc()).limit(limit)))


def queued_job_ids(session: Session) -> list[str]:
    rows = session.scalars(select(RetrainJob.id).where(RetrainJob.status == RetrainStatus.QUEUED.value))
    return list(rows)


def claim_job(session: Session, job_id: str, worker: str) -> bool:
    """queued -> running for this worker; False when the job is not queued (already run, cancelled)."""
    now = utcnow()
    claimed = session.execute(
        update(RetrainJob)
        .where(RetrainJob.id == job_id, RetrainJob.status == RetrainStatus.QUEUED.value)
        .values(status=RetrainStatus.RUNNING.value, started_at=now, heartbeat_at=now, worker=worker, phase="starting")
    )
    session.commit()
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def report_progress(
    session: Session,
    job_id: str,
    *,
    phase: str | None = None,
    detail: str | None = None,
    percent: float | None = None,
    eta_seconds: float | None = None,
) -> bool:
    """Write progress and a heartbeat; returns whether a cancel was requested."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if phase is not None:
        values |= {"phase": phase, "phase_detail": detail, "percent": percent, "eta_seconds": eta_seconds}
    session.execute(
        update(RetrainJob)
        .where(RetrainJob.id == job_id, RetrainJob.status == RetrainStatus.RUNNING.value)
        .values(**values)
    )
    session.commit()
    return bool(session.scalar(select(RetrainJob.cancel_requested).where(RetrainJob.id == job_id)))


def request_cancel(session: Session, job_id: str) -> RetrainJob:
    """A queued job is cancelled at once; a running one is flagged and stops at its next check.

    Raises UnknownJob (a KeyError) for an unknown id, JobFinished for a finished job, TooLateToCancel once it registers.
    """
    job = get_job(session, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id!r}")
    if job.status not in ACTIVE_RETRAIN_STATUSES:
        raise JobFinished(f"job {job_id} has already ended ({job.status})")
    if job.phase in IRREVOCABLE_PHASES:
        raise TooLateToCancel(f"job {job_id} is registering its model version; it is too late to cancel")
    job.cancel_requested = True
    session.commit()
    if job.status == RetrainStatus.QUEUED.value:
        finish_job(session, job_id, RetrainStatus.CANCELLED, error="cancelled before it started", only_if_queued=True)
        session.refresh(job)
    return job


def finish_job(
    session: Session,
    job_id: str,
    status: RetrainStatus,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    only_if_queued: bool = False,
) -> bool:
    """Move an active job to a final status (frees the active slot). False when it was not active."""
    allowed = (RetrainStatus.QUEUED.value,) if only_if_queued else ACTIVE_RETRAIN_STATUSES
    values: dict[str, Any] = {
        "status": status.value,
        "phase": "done" if status == RetrainStatus.SUCCEEDED else status.value,
        "phase_detail": None,
        "finished_at": utcnow(),
        "active_slot": None,
        "error": error,
        "eta_seconds": None,
    }
    if status == RetrainStatus.SUCCEEDED:
        values["percent"] = 100.0
    if result is not None:
        values["result"] = result
    changed = session.execute(
        update(RetrainJob).where(RetrainJob.id == job_id, RetrainJob.status.in_(allowed)).values(**values)
    )
    session.commit()
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def amend_finished_job(
    session: Session, job_id: str, status: RetrainStatus, *, error: str | None, result: dict[str, Any]
) -> bool:
    """Correct a finished job's status, error and result after a crash (catdog.jobs.reconcile).

    Only a job that has already ended changes (an active one belongs to its worker); False otherwise.
    """
    values: dict[str, Any] = {"status": status.value, "error": error, "result": result}
    values["phase"] = "done" if status == RetrainStatus.SUCCEEDED else status.value
    if status == RetrainStatus.SUCCEEDED:
        values["percent"] = 100.0
    changed = session.execute(
        update(RetrainJob)
        .where(RetrainJob.id == job_id, RetrainJob.status.in_(FINISHED_RETRAIN_STATUSES))
        .values(**values)
    )
    session.commit()
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def sweep_stale_jobs(session: Session, stale_after: timedelta, now: datetime | None = None) -> list[str]:
    """Fail running jobs whose last heartbeat is older than stale_after (their worker died); returns their ids."""
    cutoff = (now or utcnow()) - stale_after
    stale = list(
        session.scalars(
            select(RetrainJob.id).where(
                RetrainJob.status == RetrainStatus.RUNNING.value, RetrainJob.heartbeat_at < cutoff
            )
        )
    )
    for job_id in stale:
        finish_job(
            session,
            job_id,
            RetrainStatus.FAILED,
            error=f"the worker stopped: no heartbeat for over {stale_after.total_seconds():.0f} s; "
            "production is unchanged, start a new retrain",
        )
    return stale


def job_dict(job: RetrainJob | None) -> dict[str, Any]:
    """The API's view of one job (every field None when there is no job)."""
    if job is None:
        return {key: None for key in JOB_FIELDS} | {"cancel_requested": False}
    result = job.result or {}
    return {
        "job_id": job.id,
        "status": job.status,
        "phase": job.phase,
        "phase_detail": job.phase_detail,
        "percent": None if job.percent is None else round(job.percent, 1),
        "eta_seconds": None if job.eta_seconds is None else round(job.eta_seconds, 1),
        "error": job.error,
        "metrics": result.get("metrics"),
        "version": result.get("version"),
        "gate": result.get("gate"),
        "gate_checks": result.get("gate_checks"),  # each check of the promotion gate with its figures
        "gate_reference": result.get("gate_reference"),
        # the label check before training: {checked, quarantined, kept, trained, base_issues: {count, examples}}
        "label_check": result.get("label_check"),
        "seconds": result.get("seconds"),
        "recipe": result.get("recipe"),  # the training recipe it followed (views, epochs, from_version)
        "params": job.params,
        "worker": job.worker,
        "cancel_requested": bool(job.cancel_requested),
        "created_at": iso_utc_or_none(job.created_at),
        "started_at": iso_utc_or_none(job.started_at),
        "finished_at": iso_utc_or_none(job.finished_at),
        "heartbeat_at": iso_utc_or_none(job.heartbeat_at),
    }


JOB_FIELDS = (
    "job_id",
    "status",
    "phase",
    "phase_detail",
    "percent",
    "eta_seconds",
    "error",
    "metrics",
    "version",
    "gate",
    "gate_checks",
    "gate_reference",
    "label_check",
    "seconds",
    "recipe",
    "params",
    "worker",
    "created_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
)
