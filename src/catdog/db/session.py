"""The engine in one place: database URLs, SQLite and PostgreSQL settings, sessions and migrations.

Create one engine per process (in each web worker's start-up, not before the fork) and run
`migrate()` there: it is safe when several worker processes start at once.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from catdog.errors import UsageProblem

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_S = 30.0  # how long a SQLite writer waits for another one's lock
POSTGRES_CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key that serializes migrations across processes: "catdog" in ASCII.
MIGRATION_LOCK_KEY = int.from_bytes(b"catdog", "big")
SUPPORTED = ("sqlite", "postgresql")
URL_EXAMPLES = "sqlite:///path/to/catdog.sqlite or postgresql://user:password@host:5432/dbname"


class DatabaseUrlError(UsageProblem):
    """The database URL (CATDOG_DATABASE_URL) cannot be used."""


class DatabaseUnusable(UsageProblem):
    """The database answers but catdog cannot use it (down, refused, or not UTF-8)."""


def normalize_url(url: str | URL) -> URL:
    """The URL catdog connects with: plain `postgresql://` / `postgres://` map to psycopg 3.

    Raises DatabaseUrlError for an unreadable URL, another database, or in-memory SQLite (the
    writer thread and the worker processes need one shared file).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"cannot parse the database URL: expected {URL_EXAMPLES}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise DatabaseUrlError(f"unsupported database {backend!r}: catdog supports SQLite and PostgreSQL")
    if backend == "sqlite" and _sqlite_in_memory(parsed):
        raise DatabaseUrlError(f"in-memory SQLite cannot be shared by threads and processes: use {URL_EXAMPLES}")
    return parsed


def _sqlite_in_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database or url.query.get("mode") == "memory"


def make_engine(url: str | URL) -> Engine:
    """An engine for SQLite (file, WAL, busy timeout, foreign keys) or PostgreSQL (psycopg 3, pre-ping)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return _postgres_engine(parsed)


_json_dumps = functools.partial(json.dumps, allow_nan=False)  # PostgreSQL's json refuses NaN: fail clearly


def _sqlite_engine(url: URL) -> Engine:
    if url.database and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        json_serializer=_json_dumps,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _wal(cursor)  # readers never block the writer, across processes
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _wal(cursor: Any) -> None:
    """Switch the file to WAL (it stays so). Another process migrating a new file holds a lock that makes
    the switch fail at once, without SQLite's busy handler; it is retried for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {"application_name": "catdog"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, json_serializer=_json_dumps)
    event.listen(engine, "connect", _require_utf8, insert=True)  # before SQLAlchemy's first-connect checks
    return engine


def _require_utf8(dbapi_connection: Any, _record: Any) -> None:
    """DatabaseUnusable unless the PostgreSQL database stores UTF8.

    In SQL_ASCII psycopg hands back bytes instead of text, and SQLAlchemy's own first query then
    fails far from the cause (TypeError: cannot use a string pattern on a bytes-like object).
    """
    encoding = dbapi_connection.info.parameter_status("server_encoding")
    if isinstance(encoding, bytes):
        encoding = encoding.decode("ascii", "replace")
    if encoding and encoding.upper() not in ("UTF8", "UTF-8"):
        database = dbapi_connection.info.dbname
        dbapi_connection.close()
        raise DatabaseUnusable(
            f"the PostgreSQL database {database!r} uses the encoding {encoding}; catdog needs UTF8: create it with "
            "ENCODING 'UTF8' TEMPLATE template0, or initdb the cluster with --encoding=UTF8 --locale=C.UTF-8"
        )


def check_database(url: str | URL) -> None:
    """The URL parses, the database answers and stores text as UTF-8; one line otherwise.

    Raises DatabaseUrlError for a URL catdog cannot use and DatabaseUnusable when the server is
    down or refuses, or when a PostgreSQL database has another encoding than UTF8.
    """
    from sqlalchemy.exc import SQLAlchemyError

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseUnusable(f"cannot open the database (CATDOG_DATABASE_URL): {reason}") from None
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay readable after commit (expire_on_commit=False)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def migrate(target: Engine | str | URL) -> None:
    """Upgrade the database to the newest migration (alembic upgrade head), programmatically.

    Several processes may call it at once: PostgreSQL takes a transaction-level advisory lock,
    SQLite an exclusive transaction, and the whole upgrade runs inside it; the others wait,
    then find the schema current and do nothing.
    """
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.connect() as connection, _migration_lock(connection):
            command.upgrade(alembic_config(connection), "head")
    finally:
        if engine is not target:
            engine.dispose()


def alembic_config(connection: Connection) -> Config:
    """The Alembic configuration, built in code: the migrations folder, the URL and the connection to use."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = connection.engine.url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    config.attributes["connection"] = connection
    return config


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """A transaction that holds the migration lock; commits on success, rolls back on error."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        with _committing(connection):
            yield
        return
    driver = connection.connection.driver_connection
    previous = driver.isolation_level  # type: ignore[union-attr]
    driver.isolation_level = None  # type: ignore[union-attr]  # the driver leaves BEGIN to us
    try:
        connection.exec_driver_sql("BEGIN EXCLUSIVE")  # waits up to the busy timeout for another migrator
        with _committing(connection):
            yield
    finally:
        driver.isolation_level = previous  # type: ignore[union-attr]


@contextmanager
def _committing(connection: Connection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
