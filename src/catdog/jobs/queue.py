"""The job queue: one Huey instance per process, its storage chosen by CATDOG_QUEUE_URL.

- unset: SQLite in the state folder (`make run` embeds a consumer; no server needed);
- `redis://host:port/db`: Redis (huey.RedisHuey), for workers on other machines;
- `postgresql://user@host/db`: PostgreSQL through Huey's SQL storage (peewee + psycopg 3).

The same task code runs on each. Huey delivers a message at most once; the job's database row
(catdog.db.jobs) is what says whether it ran, so enqueuing the same job twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.api import TaskWrapper

from catdog.settings import Settings, SettingsError

QUEUE_NAME = "catdog"
RETRAIN_TASK = "catdog.retrain"
SWEEP_TASK = "catdog.sweep"


@dataclass(frozen=True)
class JobQueue:
    """The Huey instance and catdog's tasks on it."""

    huey: Huey
    retrain: TaskWrapper  # retrain(job_id) enqueues the job

    def enqueue_retrain(self, job_id: str) -> None:
        """Put a retrain message on the queue; raises the storage's own error when it is unreachable."""
        self.retrain(job_id)


def make_queue(settings: Settings) -> JobQueue:
    """The queue for the configured storage, with catdog's tasks registered on it.

    Raises SettingsError (one line) for a CATDOG_QUEUE_URL of another kind.
    """
    huey = _make_huey(settings)
    return JobQueue(huey=huey, retrain=_register_tasks(huey))


def _make_huey(settings: Settings) -> Huey:
    url = settings.queue_url
    if not url:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(settings.state_dir / "jobs.sqlite"), timeout=30)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=url)
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        from huey.contrib.sql_huey import SqlHuey

        return SqlHuey(QUEUE_NAME, database="psycopg3://" + url.split("://", 1)[1])
    raise SettingsError(
        f"invalid setting CATDOG_QUEUE_URL (got {url!r}): use redis://..., postgresql://... or leave it unset"
    )


def _register_tasks(huey: Huey) -> TaskWrapper:
    """Tasks by name, so the web process (enqueuing) and the worker (running) agree on them."""

    @huey.task(name=RETRAIN_TASK)
    def retrain(job_id: str) -> None:
        from catdog.jobs.retrain import run_retrain_job

        run_retrain_job(job_id)

    @huey.periodic_task(crontab(minute="*"), name=SWEEP_TASK)
    def sweep() -> None:
        from catdog.jobs.worker import sweep_jobs

        sweep_jobs()

    return retrain
