"""`catdog worker`: a Huey consumer for catdog's jobs, at a lower CPU priority than serving.

At start it fails the jobs a dead worker on this machine left running (kill -9, power loss),
re-enqueues queued jobs whose message may have been lost, repairs a version such a job left
half-registered (catdog.jobs.reconcile), then consumes; a periodic task (every minute) fails
running jobs anywhere whose heartbeat is older than CATDOG_JOB_STALE_SECONDS. The worker
`catdog serve` starts ends with the server, even when the server is killed (catdog.lifecycle).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session

from catdog.db import jobs
from catdog.db.models import RetrainStatus
from catdog.db.session import make_engine, migrate, session_factory
from catdog.jobs.reconcile import reconcile
from catdog.lifecycle import exit_with_parent, hold_exclusive_lock
from catdog.settings import Settings, get_settings

log = logging.getLogger(__name__)

SERVE_WORKER_LOCK = "serve-worker.lock"  # in the state folder: held by the job worker `catdog serve` runs


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
    if stale:  # one may have died while registering its version
        reconcile(settings)
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


def run_worker(settings: Settings | None = None, parent_pid: int | None = None) -> int:
    """Consume jobs until SIGINT/SIGTERM (Huey's consumer handles the signals).

    parent_pid: the `catdog serve` that started this worker (`catdog worker --with-parent PID`).
    The worker then ends with that process however it ends (catdog.lifecycle), and first waits
    until no other server's worker consumes on this state folder (a server restarted after a
    kill -9 never has two), holding SERVE_WORKER_LOCK until it exits.
    """
    from catdog.jobs.queue import make_queue

    settings = settings or get_settings()
    lock = _serve_child(settings, parent_pid) if parent_pid is not None else None
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
    reconcile(settings)  # a version its job left half-registered (catdog.jobs.reconcile)
    if settings.warm_features:  # fills the feature cache a retrain reads, on otherwise idle cores
        from catdog.jobs.warm import FeatureWarmer

        FeatureWarmer(settings).start()
    consumer = queue.huey.create_consumer(workers=1, worker_type="thread", periodic=True, check_worker_health=True)
    log.info("worker %s:%d consuming (nice %d)", socket.gethostname(), os.getpid(), os.nice(0))
    consumer.run()
    if lock is not None:
        lock.close()
    return 0


def _serve_child(settings: Settings, parent_pid: int) -> IO[str]:
    """End with the server `parent_pid`; wait for (then hold) the lock of the server's worker on this state folder."""
    exit_with_parent(parent_pid, what="job worker")

    def waiting(holder: str) -> None:
        log.warning("another server's job worker (%s) still consumes on %s: waiting for it", holder, settings.state_dir)

    return hold_exclusive_lock(settings.state_dir / SERVE_WORKER_LOCK, on_wait=waiting)
