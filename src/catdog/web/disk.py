"""The state folder's disk: its free space, and the writes that failed because it was full.

A full disk must cost writes, never serving: predictions are answered from memory (their
records wait in the writer's buffer, catdog.db.writer), a write that fails answers 507
Insufficient Storage with `{"detail": "the disk is full ..."}` (uploads store nothing partial:
catdog.uploads writes a temporary file and renames it), and GET /api/status has a `disk` block.
"""

from __future__ import annotations

import errno
import shutil
import threading
from pathlib import Path
from typing import Any

from catdog.errors import CatdogError
from catdog.timefmt import iso_utc

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13  # sqlite3's SQLITE_FULL ("database or disk is full")
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
FULL_BELOW_BYTES = 1 << 20  # less free space than this counts as full
DISK_FULL_STATUS = 507  # Insufficient Storage (RFC 4918)
FULL_WORDS = ("database or disk is full", "No space left on device", "the disk is full")  # SQLite, OSError, ours


class DiskFull(CatdogError):
    """A write failed because the state folder's disk is full (the API answers 507 with this text)."""

    status_code = DISK_FULL_STATUS


def is_disk_full(exc: BaseException | None) -> bool:
    """True for ENOSPC/EDQUOT, SQLite's SQLITE_FULL or PostgreSQL's disk_full, anywhere in exc's chain.

    The chain: SQLAlchemy's `.orig` (the driver's error), then `__cause__`, then `__context__`;
    an error that re-words its cause (MLflow's, the registry's) counts by its words (FULL_WORDS).
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull) or full_text(str(exc)):
            return True
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return True
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        if getattr(exc, "sqlstate", None) == POSTGRES_DISK_FULL:
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def disk_full_text(what: str) -> str:
    """One line for an answer: what failed, that the disk is full, what to do (no server path: the log has it)."""
    return f"the disk is full: {what} failed; free space in the state folder (CATDOG_STATE_DIR) and try again"


def full_text(text: str | None) -> bool:
    """True when an error's text says the disk is full (a writer keeps its last error as text)."""
    return bool(text) and any(words in str(text) for words in FULL_WORDS)


class DiskWatch:
    """Free space of one folder's file system and the latest write that failed for want of it. Thread-safe."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None  # {"what", "error", "at"} of the latest failed write
        self._free_at_failure: int | None = None

    def note(self, what: str, exc: BaseException | str) -> None:
        """Remember a write that failed because the disk is full: `what` ("upload a.jpg"), the error."""
        error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        error = error.splitlines()[0].replace(str(self.folder), "STATE")  # answers show no server path
        with self._lock:
            if self._last is not None and self._last["what"] == what and self._last["error"] == error:
                return  # the same failure again (a status poll re-reading the writer's error)
            self._last = {"what": what, "error": error, "at": iso_utc()}
            self._free_at_failure = self._usage()[0]

    def note_writer(self, pending: int, last_error: str | None) -> None:
        """The prediction writer's state (catdog.db.writer.WriterStats): records waiting for a full disk count."""
        if pending and full_text(last_error):
            self.note("writing prediction records (they wait in memory)", str(last_error))

    def status(self) -> dict[str, Any]:
        """{"free_bytes", "total_bytes", "full", "last_write_error": {"what", "error", "at"} | None}.

        full: less than FULL_BELOW_BYTES free, or a write failed for want of space and less than
        FULL_BELOW_BYTES more has been freed since. Bytes are those an unprivileged writer may use.
        """
        free, total = self._usage()
        with self._lock:
            last, at_failure = self._last, self._free_at_failure
        full = free is not None and free < FULL_BELOW_BYTES
        if free is not None and at_failure is not None:
            full = full or free < at_failure + FULL_BELOW_BYTES
        return {"free_bytes": free, "total_bytes": total, "full": full, "last_write_error": last}

    def _usage(self) -> tuple[int | None, int | None]:
        try:
            usage = shutil.disk_usage(self.folder)
        except OSError:
            return None, None
        return usage.free, usage.total
