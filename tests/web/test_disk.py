"""catdog.web.disk: which errors mean a full disk, and what /api/status's `disk` block says."""

from __future__ import annotations

import errno
import sqlite3
from collections import namedtuple
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from catdog.registry.types import RegistryError
from catdog.web import disk as disk_module
from catdog.web.disk import FULL_BELOW_BYTES, DiskFull, DiskWatch, is_disk_full

Usage = namedtuple("Usage", "total used free")


def sqlalchemy_error(code: int) -> OperationalError:
    error = sqlite3.OperationalError("database or disk is full" if code == 13 else "database is locked")
    error.sqlite_errorcode = code  # what sqlite3 sets on its errors (Python 3.11+)
    return OperationalError("INSERT ...", {}, error)


def test_what_counts_as_a_full_disk() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(sqlalchemy_error(13))
    assert is_disk_full(DiskFull("the disk is full"))
    try:  # a wrapper that re-words its cause and hides it (`from None`): its words still count
        try:
            raise sqlalchemy_error(13)
        except OperationalError as exc:
            raise RegistryError(f"cannot open the MLflow store: {exc.orig}") from None
    except RegistryError as wrapped:
        assert is_disk_full(wrapped)
    try:  # a cause further down the chain
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not store") from exc
    except RuntimeError as chained:
        assert is_disk_full(chained)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlalchemy_error(5))
    assert not is_disk_full(ValueError("bad"))
    assert not is_disk_full(None)


def test_a_real_sqlite_error_is_recognised(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with engine.connect() as connection:
        connection.execute(text("PRAGMA max_page_count = 2"))  # a database that cannot grow: SQLITE_FULL
        connection.execute(text("CREATE TABLE t (x TEXT)"))
        with pytest.raises(OperationalError) as caught:
            for _ in range(100):
                connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": "y" * 4000})
    assert is_disk_full(caught.value)


def test_the_status_block_stays_full_until_space_is_freed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = {"bytes": 50 * FULL_BELOW_BYTES}
    monkeypatch.setattr(disk_module.shutil, "disk_usage", lambda _: Usage(10**9, 0, free["bytes"]))
    watch = DiskWatch(tmp_path)
    assert watch.status() == {
        "free_bytes": 50 * FULL_BELOW_BYTES,
        "total_bytes": 10**9,
        "full": False,
        "last_write_error": None,
    }
    # a 60 MiB upload fails with 50 MiB free: full, though more than FULL_BELOW_BYTES are free
    watch.note("POST /api/upload-training-data", OSError(errno.ENOSPC, "No space", str(tmp_path / "uploads" / "a")))
    status = watch.status()
    assert status["full"] is True
    assert status["last_write_error"]["what"] == "POST /api/upload-training-data"
    assert str(tmp_path) not in status["last_write_error"]["error"]  # no server path in answers
    free["bytes"] += 2 * FULL_BELOW_BYTES  # space was freed: writes are expected to work again
    status = watch.status()
    assert status["full"] is False and status["last_write_error"] is not None  # the last failure stays, for the record
    free["bytes"] = FULL_BELOW_BYTES - 1
    assert watch.status()["full"] is True  # under the floor counts as full even with no failure


def test_the_writer_counts_only_while_records_wait(tmp_path: Path) -> None:
    watch = DiskWatch(tmp_path)
    watch.note_writer(0, "OperationalError: (sqlite3.OperationalError) database or disk is full")
    assert watch.status()["last_write_error"] is None  # everything written since: nothing to report
    watch.note_writer(3, "OperationalError: (sqlite3.OperationalError) database is locked")
    assert watch.status()["last_write_error"] is None
    watch.note_writer(3, "OperationalError: (sqlite3.OperationalError) database or disk is full")
    assert "prediction records" in watch.status()["last_write_error"]["what"]
