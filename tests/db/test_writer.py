"""The batched prediction writer: batches, nothing lost on close, retries, bounded buffer."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, event, func, select

from catdog.db.models import Prediction
from catdog.db.session import migrate
from catdog.db.writer import PredictionRecord, PredictionWriter

from .conftest import record

WriterFactory = Callable[..., PredictionWriter]


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Prediction)).scalar_one()


def _ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(Prediction.id)).scalars())


def _insert_sizes(engine: Engine) -> list[int]:
    """Rows per INSERT into predictions, as executed from now on."""
    sizes: list[int] = []

    @event.listens_for(engine, "before_execute")
    def _seen(connection: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if getattr(clause, "is_insert", False) and getattr(clause.table, "name", None) == "predictions":
            sizes.append(len(multiparams) if multiparams else 1)

    return sizes


def _wait_for(condition: Callable[[], bool], seconds: float = 20.0, about: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s: {about() if about else ''}"
        time.sleep(0.02)


@pytest.fixture
def writers() -> Iterator[WriterFactory]:
    """Makes PredictionWriters, and closes any a failed test left running."""
    made: list[PredictionWriter] = []

    def make(*args: Any, **kwargs: Any) -> PredictionWriter:
        made.append(PredictionWriter(*args, **kwargs))
        return made[-1]

    yield make
    for writer in made:
        writer.close(timeout=0.1)


def test_inserts_in_batches_of_at_most_max_batch(engine: Engine, writers: WriterFactory) -> None:
    sizes = _insert_sizes(engine)
    writer = writers(engine, flush_seconds=0.05, max_batch=300)
    for _ in range(1000):
        writer.submit(record())
    writer.start()
    assert writer.flush(timeout=30)
    assert sizes == [300, 300, 300, 100]
    assert _count(engine) == 1000
    assert writer.close()


def test_nothing_is_lost_on_close_with_many_threads(engine: Engine, writers: WriterFactory) -> None:
    sizes = _insert_sizes(engine)
    writer = writers(engine, flush_seconds=0.05, max_batch=64)
    writer.start()
    submitted: list[str] = []
    lock = threading.Lock()

    def submit_many() -> None:
        for _ in range(125):
            one = record(id=uuid.uuid4().hex)
            writer.submit(one)
            with lock:
                submitted.append(one.id)

    threads = [threading.Thread(target=submit_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.close(timeout=30)
    assert _ids(engine) == set(submitted) and len(submitted) == 1000
    assert sum(sizes) == 1000 and max(sizes) <= 64 and len(sizes) <= 100  # batched, not row by row
    stats = writer.stats()
    assert (stats.submitted, stats.written, stats.dropped, stats.pending, stats.running) == (1000, 1000, 0, 0, False)


def test_records_wait_at_most_about_flush_seconds(engine: Engine, writers: WriterFactory) -> None:
    writer = writers(engine, flush_seconds=0.1, max_batch=500)
    writer.start()
    time.sleep(0.2)  # the thread is idle, waiting for records
    writer.submit(record())
    _wait_for(lambda: _count(engine) == 1, seconds=10)  # no flush() call: the timer writes it
    assert writer.close()


def test_survives_a_database_error_and_retries(bare_engine: Engine, writers: WriterFactory) -> None:
    """The tables do not exist yet: inserts fail, the records wait, and land once the database is fixed."""
    writer = writers(bare_engine, flush_seconds=0.02, max_batch=50, retry_max_seconds=0.1)
    writer.start()
    for _ in range(10):
        writer.submit(record())
    _wait_for(lambda: writer.stats().failed_attempts >= 3, about=writer.stats)
    stats = writer.stats()
    assert stats.pending == 10 and stats.written == 0 and stats.dropped == 0
    assert stats.last_error and ("predictions" in stats.last_error)
    migrate(bare_engine)
    assert writer.flush(timeout=30)
    assert _count(bare_engine) == 10
    assert writer.close()


def test_drops_the_oldest_only_past_max_buffer(bare_engine: Engine, writers: WriterFactory) -> None:
    writer = writers(bare_engine, flush_seconds=0.02, max_batch=5, max_buffer=10)
    ids = [uuid.uuid4().hex for _ in range(25)]
    for one in ids:
        writer.submit(record(id=one))
    assert (writer.stats().dropped, writer.stats().pending) == (15, 10)
    migrate(bare_engine)
    assert writer.close(timeout=30)
    assert _ids(bare_engine) == set(ids[-10:])  # the newest ten
    assert writer.stats().written == 10


def test_the_bound_holds_while_retrying(bare_engine: Engine, writers: WriterFactory) -> None:
    """Failed batches go back in front of the buffer; past max_buffer the oldest are dropped."""
    writer = writers(bare_engine, flush_seconds=0.01, max_batch=5, max_buffer=10, retry_max_seconds=0.02)
    writer.start()
    for _ in range(25):
        writer.submit(record())
        time.sleep(0.002)
    assert not writer.close(timeout=0.5)  # the database stays down
    stats = writer.stats()
    assert (stats.dropped, stats.pending, stats.written, stats.running) == (15, 10, 0, False)


def test_close_gives_up_when_the_database_stays_down(bare_engine: Engine, writers: WriterFactory) -> None:
    writer = writers(bare_engine, flush_seconds=0.02, retry_max_seconds=0.05)
    writer.start()
    for _ in range(3):
        writer.submit(record())
    started = time.monotonic()
    assert not writer.close(timeout=0.5)
    assert time.monotonic() - started < 5
    assert writer.stats().pending == 3
    assert not writer.flush(timeout=1)  # returns: the thread has stopped


def test_a_row_the_database_refuses_is_set_aside_alone(engine: Engine, writers: WriterFactory) -> None:
    writer = writers(engine, flush_seconds=0.05)
    good = [record() for _ in range(4)]
    bad = record()
    object.__setattr__(bad, "model_version", None)  # NOT NULL: no retry can help
    for one in [*good[:2], bad, *good[2:]]:
        writer.submit(one)
    assert writer.close(timeout=30)
    assert _ids(engine) == {one.id for one in good}
    assert writer.stats().dropped == 1


def test_a_resubmitted_record_is_written_once(engine: Engine, writers: WriterFactory) -> None:
    writer = writers(engine, flush_seconds=0.05)
    one = record()
    writer.submit(one)
    writer.submit(one)
    assert writer.close()
    assert _count(engine) == 1 and writer.stats().dropped == 0


def test_submit_never_raises(engine: Engine, writers: WriterFactory) -> None:
    writer = writers(engine)
    writer.submit("not a record")  # type: ignore[arg-type]
    assert writer.close()
    writer.submit(record())  # after close: counted as dropped, not raised
    assert writer.stats().dropped == 2
    assert _count(engine) == 0


def test_close_writes_what_a_never_started_writer_holds(engine: Engine, writers: WriterFactory) -> None:
    writer = writers(engine)
    writer.submit(record())
    assert writer.close()
    assert _count(engine) == 1


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("created_at", datetime(2025, 1, 1), "timezone-aware"),
        ("predicted_class", "horse", "predicted_class"),
        ("endpoint", "explain", "endpoint"),
        ("p_dog", float("nan"), "p_dog"),
        ("content_sha256", "abc", "content_sha256"),
        ("batch_size", 0, "batch_size"),
    ],
)
def test_bad_records_are_refused_when_made(field: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        record(**{field: value})


def test_times_are_stored_as_utc(engine: Engine, writers: WriterFactory) -> None:
    india = datetime(2025, 3, 1, 17, 30, tzinfo=UTC) + timedelta(0)
    local = india.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
    writer = writers(engine)
    writer.submit(record(created_at=local))
    assert writer.close()
    with engine.connect() as connection:
        stored = connection.execute(select(Prediction.created_at)).scalar_one()
    assert stored == india and stored.utcoffset() == timedelta(0)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        PredictionWriter(None, max_batch=10, max_buffer=5)  # type: ignore[arg-type]


def test_a_record_has_an_id_and_a_utc_time_by_default() -> None:
    one = PredictionRecord(
        model_version="v",
        precision="int8",
        endpoint="batch",
        predicted_class="cat",
        p_dog=0.1,
        confidence=0.9,
        is_pet=None,
        pet_score=None,
        latency_ms=3.0,
        cached=True,
        batch_size=None,
        content_sha256="0" * 64,
    )
    assert len(one.id) == 32 and one.created_at.utcoffset() == timedelta(0)
    assert set(one.row()) == {column.name for column in Prediction.__table__.columns}


def test_numpy_numbers_are_written_as_python_ones(engine: Engine, writers: WriterFactory) -> None:
    writer = writers(engine)
    one = record(p_dog=np.float32(0.25), confidence=np.float64(0.75), is_pet=np.bool_(True), batch_size=np.int64(3))
    assert type(one.p_dog) is float and type(one.is_pet) is bool and type(one.batch_size) is int
    writer.submit(one)
    assert writer.close()
    with engine.connect() as connection:
        row = connection.execute(select(Prediction.p_dog, Prediction.is_pet, Prediction.batch_size)).one()
    assert tuple(row) == (0.25, True, 3)
