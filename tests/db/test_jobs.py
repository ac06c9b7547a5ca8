"""Retraining jobs in the database: one active job, claim once, progress, cancel, finish, sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from catdog.db import jobs
from catdog.db.models import RetrainStatus, utcnow


def test_only_one_job_is_active_at_a_time(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        first = jobs.create_job(session, {"backbone": None})
        with pytest.raises(jobs.JobConflict) as caught:
            jobs.create_job(session)
        assert caught.value.active_id == first.id
        assert jobs.finish_job(session, first.id, RetrainStatus.FAILED, error="boom")
        second = jobs.create_job(session)  # the slot is free again
        assert second.id != first.id and jobs.active_job(session).id == second.id  # type: ignore[union-attr]


def test_a_job_is_claimed_once(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        job = jobs.create_job(session)
        assert jobs.claim_job(session, job.id, "host:1")
        assert not jobs.claim_job(session, job.id, "host:2")  # a second delivery runs nothing
        session.refresh(job)
        assert job.status == "running" and job.worker == "host:1" and job.started_at is not None


def test_progress_heartbeat_and_cancel(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        job = jobs.create_job(session)
        jobs.claim_job(session, job.id, "host:1")
        assert not jobs.report_progress(session, job.id, phase="extracting", detail="extracting 5/10", percent=35.0)
        view = jobs.job_dict(jobs.get_job(session, job.id))
        assert view["phase"] == "extracting" and view["percent"] == 35.0 and view["phase_detail"] == "extracting 5/10"
        jobs.request_cancel(session, job.id)
        assert jobs.report_progress(session, job.id)  # the running job sees the flag at its next report
        assert jobs.finish_job(session, job.id, RetrainStatus.CANCELLED, error="cancelled")
        with pytest.raises(jobs.JobFinished):
            jobs.request_cancel(session, job.id)
        with pytest.raises(KeyError):
            jobs.request_cancel(session, "nope")


def test_a_job_registering_its_version_cannot_be_cancelled(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        job = jobs.create_job(session)
        jobs.claim_job(session, job.id, "host:1")
        jobs.report_progress(session, job.id, phase="registering", detail="registering", percent=97.0)
        with pytest.raises(jobs.TooLateToCancel):
            jobs.request_cancel(session, job.id)


def test_a_queued_job_is_cancelled_at_once(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        job = jobs.create_job(session)
        assert jobs.request_cancel(session, job.id).status == "cancelled"
        assert not jobs.claim_job(session, job.id, "host:1")
        assert jobs.active_job(session) is None


def test_stale_running_jobs_are_failed_by_the_sweeper(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        job = jobs.create_job(session)
        jobs.claim_job(session, job.id, "host:1")
        assert jobs.sweep_stale_jobs(session, timedelta(seconds=60)) == []  # fresh heartbeat
        later = utcnow() + timedelta(seconds=61)
        assert jobs.sweep_stale_jobs(session, timedelta(seconds=60), now=later) == [job.id]
        session.refresh(job)
        assert job.status == "failed" and "heartbeat" in (job.error or "") and job.active_slot is None


def test_job_dict_without_a_job() -> None:
    view = jobs.job_dict(None)
    assert view["job_id"] is None and view["cancel_requested"] is False


def test_a_restarted_worker_fails_the_job_its_earlier_life_left_running(
    sessions: sessionmaker[Session], tmp_path
) -> None:
    """A restarted container keeps its hostname and often its pid: a job claimed under our own name is stale."""
    from catdog.instance import instance_name
    from catdog.jobs.worker import recover_jobs

    with sessions() as session:
        job = jobs.create_job(session)
        assert jobs.claim_job(session, job.id, instance_name())
        (tmp_path / "jobs" / job.id).mkdir(parents=True)
        failed, queued = recover_jobs(session, tmp_path)
        assert failed == [job.id] and queued == []
        assert jobs.get_job(session, job.id).status == RetrainStatus.FAILED.value
    assert not (tmp_path / "jobs" / job.id).exists()


def test_recovery_leaves_a_live_workers_job_alone(sessions: sessionmaker[Session], tmp_path) -> None:
    import socket
    import subprocess
    import sys

    from catdog.jobs.worker import recover_jobs

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sessions() as session:
            job = jobs.create_job(session)
            assert jobs.claim_job(session, job.id, f"{socket.gethostname()}:{other.pid}")
            assert recover_jobs(session, tmp_path) == ([], [])
            assert jobs.get_job(session, job.id).status == RetrainStatus.RUNNING.value
    finally:
        other.kill()
        other.wait()
