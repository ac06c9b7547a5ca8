"""The job queue on each storage catdog supports: SQLite (embedded), Redis and PostgreSQL (the ones running here).

A job whose cancel flag is already set travels through the queue and a consumer thread, which
claims it and stops at its first check: the whole round trip without training anything.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import update

from catdog.db import jobs
from catdog.db.models import RetrainJob
from catdog.db.session import make_engine, migrate, session_factory
from catdog.jobs.queue import make_queue
from catdog.settings import Settings, SettingsError

from ..conftest import CATSDOGS

REDIS = "redis://127.0.0.1:6379/15"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    "queue_url",
    [
        pytest.param(None, id="sqlite"),
        pytest.param(REDIS, id="redis", marks=pytest.mark.skipif(not _reachable(6379), reason="no Redis on :6379")),
        pytest.param(
            POSTGRES, id="postgresql", marks=pytest.mark.skipif(not _reachable(5432), reason="no PostgreSQL on :5432")
        ),
    ],
)
def test_a_job_travels_through_the_queue(
    queue_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"STATE_DIR": tmp_path / "state", "DATA_DIR": CATSDOGS, "RETRAIN_MIN_PER_CLASS": 5}.items():
        monkeypatch.setenv(f"CATDOG_{name}", str(value))
    if queue_url:
        monkeypatch.setenv("CATDOG_QUEUE_URL", queue_url)
    settings = Settings()
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        job_id = jobs.create_job(session, {"test": uuid.uuid4().hex}).id
        session.execute(update(RetrainJob).where(RetrainJob.id == job_id).values(cancel_requested=True))
        session.commit()
    queue = make_queue(settings)
    queue.huey.flush()  # a queue of an earlier run on the same server
    queue.enqueue_retrain(job_id)
    assert queue.huey.pending_count() == 1
    consumer = queue.huey.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with sessions() as session:
                if jobs.get_job(session, job_id).status == "cancelled":  # type: ignore[union-attr]
                    break
            time.sleep(0.1)
        with sessions() as session:
            assert jobs.get_job(session, job_id).status == "cancelled"  # type: ignore[union-attr]
        queue.enqueue_retrain(job_id)  # delivered twice: the second delivery finds nothing to do
        time.sleep(1.0)
        assert queue.huey.pending_count() == 0
        with sessions() as session:
            assert jobs.get_job(session, job_id).status == "cancelled"  # type: ignore[union-attr]
    finally:
        consumer.stop(graceful=True)
        queue.huey.flush()
        engine.dispose()


def test_an_unknown_queue_url_is_one_line() -> None:
    with pytest.raises(SettingsError, match="CATDOG_QUEUE_URL"):
        make_queue(Settings(queue_url="amqp://127.0.0.1"))
