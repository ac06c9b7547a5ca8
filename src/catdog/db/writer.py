"""Predictions recorded off the request path: an in-memory buffer and one background thread that
inserts them in batches.

Policy: `submit()` only appends to a buffer (never blocks on the database, never raises). The
thread writes a batch when `max_batch` records wait or the oldest has waited `flush_seconds`.
When the database fails, the records stay buffered and the thread retries with a doubling delay
(up to `retry_max_seconds`); only past `max_buffer` records does it drop the oldest, counting and
logging the drops (a record takes about 0.5 KB: the default 100,000 hold about 50 MB, minutes of
traffic). A record the database refuses as bad data is set aside alone (counted, logged) so that it
cannot block the others; an id already stored is skipped, so a retry never duplicates a row.
`close()` writes everything before it returns (or gives up after its timeout, logging how many).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Insert, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from catdog import CLASS_NAMES
from catdog.db.models import Prediction, new_id, utcnow

logger = logging.getLogger(__name__)

ENDPOINTS = ("predict", "batch")
PRECISIONS = ("fp32", "int8")
DROP_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One prediction as the web layer saw it; the fields are the `predictions` columns.

    `created_at` is timezone-aware (stored as UTC); `latency_ms` is the server time for this
    prediction in milliseconds; `batch_size` is the number of images in the ONNX Runtime run it
    was part of (None when served from the cache). Bad values raise ValueError here, in the
    caller, never later in the writer thread.
    """

    model_version: str
    precision: str
    endpoint: str
    predicted_class: str
    p_dog: float
    confidence: float
    is_pet: bool | None
    pet_score: float | None
    latency_ms: float
    cached: bool
    batch_size: int | None
    content_sha256: str
    request_id: str | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        # NumPy scalars (float32, bool_, int64) become Python ones: the drivers cannot bind them all.
        for name in ("p_dog", "confidence", "pet_score", "latency_ms"):
            _coerce(self, name, float)
        for name in ("is_pet", "cached"):
            _coerce(self, name, bool)
        _coerce(self, "batch_size", int)
        problem = _problem(self)
        if problem:
            raise ValueError(f"bad PredictionRecord: {problem}")

    def row(self) -> dict[str, Any]:
        """The record as a column -> value mapping for an insert."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS = tuple(f.name for f in fields(PredictionRecord))


def _coerce(record: PredictionRecord, name: str, kind: type) -> None:
    value = getattr(record, name)
    if value is not None and type(value) is not kind:
        try:
            object.__setattr__(record, name, kind(value))
        except (TypeError, ValueError):
            raise ValueError(f"bad PredictionRecord: {name} must be a {kind.__name__}, got {value!r}") from None


def _problem(record: PredictionRecord) -> str | None:
    checks: list[tuple[bool, str]] = [
        (0 < len(record.id) <= 36, f"id must be 1 to 36 characters (a uuid hex), got {record.id!r}"),
        (record.created_at.utcoffset() is not None, "created_at must be timezone-aware (UTC)"),
        (record.predicted_class in CLASS_NAMES, f"predicted_class must be one of {CLASS_NAMES}"),
        (record.endpoint in ENDPOINTS, f"endpoint must be one of {ENDPOINTS}"),
        (record.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
        (_unit(record.p_dog) and _unit(record.confidence), "p_dog and confidence must be in [0, 1]"),
        (record.pet_score is None or math.isfinite(record.pet_score), "pet_score must be finite"),
        (math.isfinite(record.latency_ms) and record.latency_ms >= 0, "latency_ms must be finite and >= 0"),
        (record.batch_size is None or record.batch_size >= 1, "batch_size must be None or >= 1"),
        (len(record.content_sha256) == 64, "content_sha256 must be 64 hex digits"),
        (record.request_id is None or len(record.request_id) <= 64, "request_id must be at most 64 characters"),
        (0 < len(record.model_version) <= 128, "model_version must be 1 to 128 characters"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _unit(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


@dataclass(frozen=True)
class WriterStats:
    """Counters since the writer was made: records submitted, written, dropped, still buffered."""

    submitted: int
    written: int
    dropped: int  # buffer overflow, refused as bad data, or submitted after close()
    pending: int  # buffered or being written
    failed_attempts: int  # batch inserts that failed and will be retried
    last_error: str | None
    running: bool


class PredictionWriter:
    """Buffers PredictionRecords and inserts them in batches from one background thread.

    Make one per process after the fork; `start()` it, `submit()` from any thread, `close()` at
    shutdown. See the module docstring for the policy when the database is down.
    """

    def __init__(
        self,
        engine: Engine,
        flush_seconds: float = 0.5,
        max_batch: int = 500,
        *,
        max_buffer: int = 100_000,
        retry_max_seconds: float = 30.0,
    ) -> None:
        if flush_seconds <= 0 or max_batch < 1 or max_buffer < max_batch or retry_max_seconds <= 0:
            raise ValueError("need flush_seconds > 0, max_batch >= 1, max_buffer >= max_batch, retry_max_seconds > 0")
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.retry_max_seconds = retry_max_seconds
        self._statement = _insert_statement(engine)
        self._cond = threading.Condition()
        self._buffer: deque[PredictionRecord] = deque()
        self._oldest_since = 0.0  # monotonic time the oldest buffered record arrived
        self._thread: threading.Thread | None = None
        self._closed = False  # no more submits
        self._deadline = math.inf  # close(): give up retrying after this monotonic time
        self._flush_upto = 0  # flush(): write everything submitted up to this count now
        self._submitted = self._written = self._dropped = self._handled = self._failed_attempts = 0
        self._in_flight = 0  # taken from the buffer, being written
        self._last_error: str | None = None
        self._last_drop_log = -math.inf
        self._stopped = False  # the thread has ended (after close)

    # --- the caller's side ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (once; later calls do nothing)."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="catdog-db-writer", daemon=True)
            self._thread.start()

    def submit(self, record: PredictionRecord) -> None:
        """Queue one record for the database. Never blocks on the database and never raises."""
        try:
            with self._cond:
                if self._closed or not isinstance(record, PredictionRecord):
                    self._drop(1, "the writer is closed" if self._closed else f"not a PredictionRecord: {record!r:.80}")
                    return
                if not self._buffer:
                    self._oldest_since = time.monotonic()
                self._buffer.append(record)
                self._submitted += 1
                if len(self._buffer) > self.max_buffer:
                    self._buffer.popleft()
                    self._handled += 1
                    self._drop(1, f"more than {self.max_buffer} records waiting for the database")
                if len(self._buffer) in (1, self.max_batch):  # the flush timer starts, or a batch is full
                    self._cond.notify_all()
        except Exception:  # never into the request path
            logger.exception("could not queue a prediction record")

    def flush(self, timeout: float | None = None) -> bool:
        """Write every record submitted so far; True once written, False after `timeout` seconds."""
        self.start()
        with self._cond:
            target = self._submitted
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._handled >= target or self._stopped, timeout)
            return self._handled >= target

    def close(self, timeout: float = 30.0) -> bool:
        """Write everything, then stop the thread. Returns True when nothing was left unwritten.

        If the database stays unreachable for `timeout` seconds, the records still buffered are
        given up and logged as an error.
        """
        with self._cond:
            if self._closed and self._thread is None:
                return not self._buffer
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
            needs_thread = self._thread is None and bool(self._buffer)
        if needs_thread:
            self.start()
        thread = self._thread
        if thread is not None:
            thread.join(timeout + 5.0)
        with self._cond:
            lost = len(self._buffer) + self._in_flight
        if lost:
            logger.error("%d prediction records not written: the database was unavailable at shutdown", lost)
        return lost == 0

    def stats(self) -> WriterStats:
        """A snapshot of the counters (for the health and monitoring pages)."""
        with self._cond:
            return WriterStats(
                submitted=self._submitted,
                written=self._written,
                dropped=self._dropped,
                pending=len(self._buffer) + self._in_flight,
                failed_attempts=self._failed_attempts,
                last_error=self._last_error,
                running=self._thread is not None and self._thread.is_alive(),
            )

    def _drop(self, count: int, why: str) -> None:
        """Count dropped records (lock held) and log at most every DROP_LOG_INTERVAL_S."""
        self._dropped += count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            logger.warning("dropped prediction records (%s); %d dropped so far", why, self._dropped)

    # --- the background thread -----------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.0
        while True:
            batch = self._next_batch()
            if batch is None:
                with self._cond:
                    self._stopped = True
                    self._cond.notify_all()
                return
            try:
                failed = self._write(batch)
            except Exception as exc:  # a bug here must not kill the thread and lose the buffer
                logger.exception("prediction writer failed unexpectedly")
                self._failed(exc, len(batch))
                failed = batch
            if failed:
                delay = min(max(2 * delay, self.flush_seconds), self.retry_max_seconds)
                self._requeue(failed, delay)
            else:
                delay = 0.0

    def _next_batch(self) -> list[PredictionRecord] | None:
        """Wait for a batch worth writing; None when closing and done (or out of time)."""
        with self._cond:
            while True:
                if self._closed and (not self._buffer or time.monotonic() >= self._deadline):
                    return None
                if self._buffer and self._batch_due():
                    break
                wait = self._oldest_since + self.flush_seconds - time.monotonic() if self._buffer else None
                self._cond.wait(wait)
            self._in_flight = min(len(self._buffer), self.max_batch)
            return [self._buffer.popleft() for _ in range(self._in_flight)]

    def _batch_due(self) -> bool:
        return (
            len(self._buffer) >= self.max_batch
            or self._closed
            or self._flush_upto > self._handled
            or time.monotonic() >= self._oldest_since + self.flush_seconds
        )

    def _write(self, batch: list[PredictionRecord]) -> list[PredictionRecord]:
        """Insert the batch in one statement; returns the records to retry (empty on success)."""
        try:
            with self.engine.begin() as connection:
                connection.execute(self._statement, [record.row() for record in batch])
        except SQLAlchemyError as exc:
            if not _bad_data(exc):
                self._failed(exc, len(batch))
                return batch
            return self._write_one_by_one(batch)
        self._done(written=len(batch))
        return []

    def _write_one_by_one(self, batch: list[PredictionRecord]) -> list[PredictionRecord]:
        """After a bad-data error: insert alone each record, setting aside those refused."""
        for index, record in enumerate(batch):
            try:
                with self.engine.begin() as connection:
                    connection.execute(self._statement, [record.row()])
            except SQLAlchemyError as exc:
                if not _bad_data(exc):
                    self._failed(exc, len(batch) - index)
                    return batch[index:]
                logger.error("prediction %s refused by the database, dropped: %s", record.id, exc)
                with self._cond:
                    self._drop(1, "refused by the database")
                self._done(written=0, refused=1)
            else:
                self._done(written=1)
        return []

    def _failed(self, exc: Exception, count: int) -> None:
        with self._cond:
            self._failed_attempts += 1
            self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        logger.warning("could not write %d prediction records, will retry: %s", count, self._last_error)

    def _done(self, written: int, refused: int = 0) -> None:
        with self._cond:
            self._in_flight -= written + refused
            self._written += written
            self._handled += written + refused
            self._cond.notify_all()

    def _requeue(self, failed: list[PredictionRecord], delay: float) -> None:
        """Put the records back in front (oldest first), trim past max_buffer, wait `delay` seconds."""
        with self._cond:
            self._in_flight = 0
            self._buffer.extendleft(reversed(failed))
            overflow = len(self._buffer) - self.max_buffer
            for _ in range(max(overflow, 0)):
                self._buffer.popleft()
            if overflow > 0:
                self._handled += overflow
                self._drop(overflow, f"more than {self.max_buffer} records waiting for the database")
                self._cond.notify_all()
            until = min(time.monotonic() + delay, self._deadline)
            was_closed, flush_upto = self._closed, self._flush_upto
            # close() or flush() cuts the wait short once: the database may be back.
            self._cond.wait_for(
                lambda: time.monotonic() >= until or self._closed != was_closed or self._flush_upto != flush_upto,
                max(until - time.monotonic(), 0.0),
            )


def _bad_data(exc: SQLAlchemyError) -> bool:
    """True when retrying cannot help: the rows themselves are refused (not a connection or lock problem)."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _insert_statement(engine: Engine) -> Insert:
    """INSERT into predictions, ignoring an id already there (a retry after a lost commit acknowledgement)."""
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert(Prediction).on_conflict_do_nothing(index_elements=["id"])
    if name == "sqlite":
        return sqlite.insert(Prediction).on_conflict_do_nothing(index_elements=["id"])
    return insert(Prediction)
