"""`catdog worker` as a process: kill -9 in the middle of a job, then the next start fails it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catdog.db import jobs
from catdog.db.session import make_engine, migrate, session_factory
from catdog.jobs.queue import make_queue
from catdog.registry import Registry
from catdog.settings import get_settings

from ..conftest import CATSDOGS


def _job_view(url: str, job_id: str) -> dict[str, object]:
    engine = make_engine(url)
    with session_factory(engine)() as session:
        view = jobs.job_dict(jobs.get_job(session, job_id))
    engine.dispose()
    return view


def _start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "catdog.cli", "worker"], stdout=subprocess.DEVNULL)


def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_kill_9_in_the_middle_of_a_job(tmp_path: Path, shipped_lite0: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "STATE_DIR": tmp_path / "state",
        "FEATURES_DIR": tmp_path / "features",  # a cold cache: the job spends seconds extracting
        "DATA_DIR": CATSDOGS,
        "MODELS_DIR": shipped_lite0,
        "DEFAULT_MODEL": "efficientnet_lite0",
        "RETRAIN_MIN_PER_CLASS": 5,
        "JOB_HEARTBEAT_SECONDS": 0.2,
        "WORKER_NICE": 0,
        "LOG_FORMAT": "text",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"CATDOG_{name}", str(value))
    settings = get_settings()
    Registry(settings).bootstrap()
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    with session_factory(engine)() as session:
        job_id = jobs.create_job(session).id
    engine.dispose()
    make_queue(settings).enqueue_retrain(job_id)

    worker = _start_worker()
    try:
        url = settings.sqlalchemy_url
        _until(lambda: _job_view(url, job_id)["phase"] in ("extracting", "training"), 120, "the job never started")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        assert _job_view(url, job_id)["status"] == "running"  # nobody is left to say otherwise
        worker = _start_worker()
        _until(lambda: _job_view(url, job_id)["status"] == "failed", 60, "the next start did not fail the job")
        view = _job_view(url, job_id)
        assert "stopped in the middle of the job" in str(view["error"]) and "production is unchanged" in str(
            view["error"]
        )
        registry = Registry(settings)
        assert registry.aliases() == {"production": 1} and [v.version for v in registry.versions()] == [1]
        assert not (settings.state_dir / "jobs" / job_id).exists()  # the half-built model is gone
    finally:
        worker.terminate()
        worker.wait(10)
