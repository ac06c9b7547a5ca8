"""`catdog worker`: a Huey consumer for catdog's jobs, at a lower CPU priority than serving.

At start it fails the jobs a dead worker on this machine left running (kill -9, power loss),
re-enqueues queued jobs whose message may have been lost, then consumes; a periodic task
(every minute) fails running jobs anywhere whose heartbeat is older than CATDOG_JOB_STALE_SECONDS.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from catdog.db import jobs
from catdog.db.models import RetrainStatus
from catdog.db.session import make_engine, migrate, session_factory
from catdog.settings import Settings, get_settings

log = logging.getLogger(__name__)


def sweep_jobs(settings: Settings | None = None) -> list[str]:
    """Fail running jobs without a recent heartbeat; returns their ids."""
    settings = settings or get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_factory(engine)() as session:
            stale = jobs.sweep_stale_jobs(session, timedelta(seconds=settings.job_stale_seconds))
    finally:
        engine.dispose()
    for job_id in stale:
        log.warning("job %s failed: its worker stopped sending heartbeats", job_id)
    return stale


def recover_jobs(session: Session, state_dir: Path) -> tuple[list[str], list[str]]:
    """(jobs failed because their worker process on this host is gone, queued job ids to re-enqueue).

    A failed job's working folder (a half-built model directory) is removed: it was never registered,
    so it was never served. A job that names this very process was claimed before it started: a
    restarted container keeps its hostname and often gets the same pid.
    """
    host = socket.gethostname()
    failed = []
    for job in jobs.list_jobs(session, limit=50):
        if job.status != RetrainStatus.RUNNING.value or not job.worker:
            continue
        job_host, _, pid = job.worker.rpartition(":")
        if job_host == host and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            jobs.finish_job(
                session,
                job.id,
                RetrainStatus.FAILED,
                error=f"the worker (pid {pid}) stopped in the middle of the job; production is unchanged",
            )
            failed.append(job.id)
            shutil.rmtree(state_dir / "jobs" / job.id, ignore_errors=True)
    return failed, jobs.queued_job_ids(session)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_worker(settings: Settings | None = None) -> int:
    """Consume jobs until SIGINT/SIGTERM (Huey's consumer handles the signals)."""
    from catdog.jobs.queue import make_queue

    settings = settings or get_settings()
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    with session_factory(engine)() as session:
        failed, queued = recover_jobs(session, settings.state_dir)
    engine.dispose()
    for job_id in failed:
        log.warning("job %s failed: its worker died", job_id)
    queue = make_queue(settings)
    for job_id in queued:  # their message may be lost; a job runs once whatever happens (claim_job)
        queue.enqueue_retrain(job_id)
    sweep_jobs(settings)
    consumer = queue.huey.create_consumer(workers=1, worker_type="thread", periodic=True, check_worker_health=True)
    log.info("worker %s:%d consuming (nice %d)", socket.gethostname(), os.getpid(), os.nice(0))
    consumer.run()
    return 0
