"""The database under test: a SQLite file, and a fresh PostgreSQL database for the session.

PostgreSQL comes from CATDOG_TEST_POSTGRES_URL (default: the server on 127.0.0.1:5432, user
postgres, through its `postgres` database). Each test gets its own schema there; the database
is dropped at the end, and its session time zone is not UTC, so that UTC handling is tested.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from catdog.db.session import make_engine, migrate, session_factory
from catdog.db.writer import PredictionRecord

ADMIN_URL = os.environ.get("CATDOG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NOT_UTC = "America/New_York"


def _where(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of a fresh, uniquely named PostgreSQL database, dropped after the session."""
    try:
        admin = psycopg.connect(_conninfo(ADMIN_URL), connect_timeout=3, autocommit=True)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"PostgreSQL not reachable at {_where(ADMIN_URL)}: {reason}")
    name = f"catdog_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f"ALTER DATABASE \"{name}\" SET timezone TO '{NOT_UTC}'")
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """An empty database: a SQLite file in a folder not made yet, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'catdog.sqlite'}"
        return
    base: str = request.getfixturevalue("postgres_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(base), autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    finally:
        with psycopg.connect(_conninfo(base), autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def bare_engine(database_url: str) -> Iterator[Engine]:
    """An engine on the empty (not migrated) database."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    """An engine on the migrated database."""
    migrate(bare_engine)
    return bare_engine


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def record(**overrides: Any) -> PredictionRecord:
    """A valid PredictionRecord; keyword arguments replace fields."""
    values: dict[str, Any] = {
        "model_version": "vgg16-test",
        "precision": "fp32",
        "endpoint": "predict",
        "predicted_class": "dog",
        "p_dog": 0.9,
        "confidence": 0.9,
        "is_pet": True,
        "pet_score": 0.8,
        "latency_ms": 12.5,
        "cached": False,
        "batch_size": 1,
        "content_sha256": "ab" * 32,
        "created_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    }
    values.update(overrides)
    return PredictionRecord(**values)
