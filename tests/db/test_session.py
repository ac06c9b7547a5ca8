"""Engines, URLs and migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, make_url, text

from catdog.db import session as db_session
from catdog.db.models import Base
from catdog.db.session import DatabaseUrlError, make_engine, migrate, normalize_url
from catdog.db.writer import PredictionWriter

from .conftest import record

TABLES = {"predictions", "retrain_jobs", "drift_reports", "uploads", "feedback", "alembic_version"}
HEAD = ScriptDirectory(str(db_session.MIGRATIONS_DIR)).get_current_head()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _version(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:p@db:5432/catdog", "postgresql+psycopg"),
        ("postgres://u@db/catdog", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/catdog", "postgresql+psycopg"),
        ("sqlite:////tmp/x/catdog.sqlite", "sqlite"),
    ],
)
def test_urls_map_to_psycopg(given: str, driver: str) -> None:
    url = normalize_url(given)
    assert url.drivername == driver
    assert url.render_as_string(hide_password=False).split("://")[1] == given.split("://")[1]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("not a url", "cannot parse"),
        ("mysql://u@db/catdog", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_bad_urls_are_refused_clearly(given: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError, match=says) as caught:
        make_engine(given)
    assert "\n" not in str(caught.value)


def test_sqlite_engine_makes_its_folder_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deeper" / "catdog.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            names = ("journal_mode", "foreign_keys", "busy_timeout")
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}
        assert path.parent.is_dir()
        assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30_000}
    finally:
        engine.dispose()


def test_migrate_creates_every_table_and_is_idempotent(database_url: str, bare_engine: Engine) -> None:
    assert _tables(bare_engine) == set()
    migrate(database_url)  # from a URL
    assert _tables(bare_engine) == TABLES
    assert _version(bare_engine) == [HEAD]
    migrate(bare_engine)  # from an engine, again: nothing to do
    migrate(database_url)
    assert _tables(bare_engine) == TABLES
    assert _version(bare_engine) == [HEAD]
    with bare_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM predictions")).scalar() == 0


def test_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def _start_a_worker(barrier: Any, url: str, records: int) -> None:
    """What a web worker process does at start-up: migrate, then record predictions."""
    barrier.wait(timeout=60)
    migrate(url)
    engine = make_engine(url)
    writer = PredictionWriter(engine, flush_seconds=0.01, max_batch=20)
    writer.start()
    for _ in range(records):
        writer.submit(record())
    assert writer.close(timeout=60)
    engine.dispose()


def test_worker_processes_starting_at_once(database_url: str, bare_engine: Engine) -> None:
    """Two processes migrate at the same moment (one waits for the other), then both write: nothing lost."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_start_a_worker, args=(barrier, database_url, 300)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert _tables(bare_engine) == TABLES
    assert _version(bare_engine) == [HEAD]
    with bare_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM predictions")).scalar() == 600


def test_the_alembic_cli_configuration_upgrades_and_downgrades(
    database_url: str, bare_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATDOG_DATABASE_URL", database_url)
    config = Config(str(db_session.MIGRATIONS_DIR.parent / "alembic.ini"))
    command.upgrade(config, "head")
    assert _tables(bare_engine) == TABLES
    command.downgrade(config, "base")
    assert _tables(bare_engine) == {"alembic_version"}


def test_a_database_that_is_not_utf8_is_refused_in_one_line() -> None:
    """SQL_ASCII makes psycopg hand back bytes: SQLAlchemy's first query failed with a TypeError far from the cause."""
    import uuid

    import psycopg

    from catdog.db.session import DatabaseUnusable, check_database

    from .conftest import ADMIN_URL, _conninfo, _where

    try:
        admin = psycopg.connect(_conninfo(ADMIN_URL), connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at {_where(ADMIN_URL)}: {str(exc).strip()[:80]}")
    name = f"catdog_ascii_{uuid.uuid4().hex[:8]}"
    try:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        with pytest.raises(DatabaseUnusable, match=r"SQL_ASCII.*needs UTF8"):
            check_database(url)
        with pytest.raises(DatabaseUnusable, match="SQL_ASCII"):
            migrate(url)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
