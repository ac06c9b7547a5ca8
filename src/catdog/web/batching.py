"""Dynamic batching: concurrent requests are grouped into one model run (Triton's dynamic_batching).

One `MicroBatcher` owns one worker thread. Callers on the event loop `await submit(item)`; the
thread takes up to `max_batch_size` items, waiting at most `max_batch_wait_s` for a batch to
fill once the first item is there, and runs `run_batch(items)` (an ONNX Runtime run, which
releases the GIL). The knobs and their vocabulary follow Triton (`max_batch_size`,
`max_queue_delay`) and Ray Serve (`@serve.batch(max_batch_size, batch_wait_timeout_s)`).

What the serving lessons of BentoML, Ray Serve and Triton users ask of it:
- a cancelled request is dropped before it runs and never breaks the loop;
- a failing batch is retried item by item, so one bad item fails alone;
- past `max_queue_size` waiting items, `submit` raises `Overloaded` at once (the caller answers
  503 with Retry-After) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from catdog.errors import CatdogError
from catdog.web.problems import NotReady

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(CatdogError):
    """The queue is full: try again after `retry_after` seconds (503, `retry_after` in the answer and its header)."""

    status_code = 503

    def __init__(self, retry_after: float, depth: int) -> None:
        super().__init__(f"the server is busy ({depth} images queued); retry in {retry_after:.0f} s")
        self.retry_after = retry_after
        self.depth = depth

    def http_extra(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}

    def http_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(int(self.retry_after))}


class BatcherStopped(NotReady, RuntimeError):
    """The batcher was stopped and takes no more work (the API answers as NotReady: 503)."""


@dataclass
class BatchStats:
    """What happened in one run: for metrics and for telling callers their batch size."""

    size: int
    seconds: float


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future[tuple[R, BatchStats]] = field(default_factory=Future)


class MicroBatcher(Generic[T, R]):
    """Group items from many callers into batches for `run_batch` (one list in, one list out, same order).

    Args:
        run_batch: items -> results, len(results) == len(items); runs on the batcher's thread.
        max_batch_size: the most items in one run (images, not requests).
        max_batch_wait_s: how long the first item of a batch waits for others (seconds).
        max_queue_size: the most items waiting; `submit` raises Overloaded past it.
        on_batch: called after each run with its stats (metrics); exceptions there are logged.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_batch_wait_s: float,
        max_queue_size: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_batch_wait_s < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1, max_batch_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_s
        self.max_queue_size = max_queue_size
        self.on_batch = on_batch
        self.name = name
        self._queue: queue.Queue[_Pending[T, R] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)  # (end time, items) of recent runs

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the thread (a clean shutdown loses no request)."""
        self._stopping = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        """Items waiting for a run (not counting the one running)."""
        return self._queue.qsize()

    def throughput(self) -> float:
        """Items per second over the recent runs (0 when unknown)."""
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1][0] - self._recent[0][0]
        return sum(n for _, n in list(self._recent)[1:]) / span if span > 0 else 0.0

    def retry_after(self, depth: int | None = None) -> float:
        """Seconds until the queue has likely drained: depth / throughput, at least 1."""
        depth = self.depth if depth is None else depth
        rate = self.throughput()
        return max(1.0, math.ceil(depth / rate)) if rate > 0 else 1.0

    # --- submitting ---------------------------------------------------------------------------------
    def submit_nowait(self, item: T) -> Future[tuple[R, BatchStats]]:
        """Queue one item; its future gives (result, stats). Raises Overloaded past the bound."""
        if self._stopping:
            raise BatcherStopped(f"{self.name} is stopped")
        depth = self._queue.qsize()
        if depth >= self.max_queue_size:
            raise Overloaded(self.retry_after(depth), depth)
        pending: _Pending[T, R] = _Pending(item)
        self._queue.put(pending)
        return pending.future

    async def submit(self, item: T) -> tuple[R, BatchStats]:
        """Await one item's result. Cancelling the awaiting task drops the item if it has not run."""
        return await asyncio.wrap_future(self.submit_nowait(item))

    # --- the worker thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch, last = self._collect()
            if batch:
                self._run(batch)
            if last:
                return

    def _collect(self) -> tuple[list[_Pending[T, R]], bool]:
        """Block for the first item, then gather more until the batch is full or the wait is over."""
        first = self._queue.get()
        if first is None:
            return self._drain_rest(), True
        batch = [first]
        deadline = time.monotonic() + self.max_batch_wait_s
        while len(batch) < self.max_batch_size:
            try:
                timeout = deadline - time.monotonic()
                following = self._queue.get_nowait() if timeout <= 0 else self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if following is None:
                self._queue.put(None)  # stop after this batch and the rest
                break
            batch.append(following)
        return batch, False

    def _drain_rest(self) -> list[_Pending[T, R]]:
        rest: list[_Pending[T, R]] = []
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if pending is not None:
                rest.append(pending)

    def _run(self, batch: list[_Pending[T, R]]) -> None:
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]  # drops cancelled requests
        for start in range(0, len(live), self.max_batch_size):
            chunk = live[start : start + self.max_batch_size]
            try:
                self._run_chunk(chunk)
            except BaseException as exc:  # never let anything kill the loop
                log.exception("batch of %d failed", len(chunk))
                for pending in chunk:
                    if not pending.future.done():
                        pending.future.set_exception(exc)

    def _run_chunk(self, chunk: list[_Pending[T, R]]) -> None:
        started = time.perf_counter()
        try:
            results = list(self.run_batch([p.item for p in chunk]))
            if len(results) != len(chunk):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(chunk)} items")
        except Exception:
            if len(chunk) == 1:
                raise
            log.warning("batch of %d failed; retrying its items one by one", len(chunk))
            for pending in chunk:
                self._run_one(pending)
            return
        stats = BatchStats(size=len(chunk), seconds=time.perf_counter() - started)
        self._finished(stats)
        for pending, result in zip(chunk, results, strict=True):
            pending.future.set_result((result, stats))

    def _run_one(self, pending: _Pending[T, R]) -> None:
        started = time.perf_counter()
        try:
            (result,) = self.run_batch([pending.item])
        except Exception as exc:
            pending.future.set_exception(exc)
            return
        stats = BatchStats(size=1, seconds=time.perf_counter() - started)
        self._finished(stats)
        pending.future.set_result((result, stats))

    def _finished(self, stats: BatchStats) -> None:
        self._recent.append((time.monotonic(), stats.size))
        if self.on_batch is not None:
            try:
                self.on_batch(stats)
            except Exception:
                log.exception("on_batch callback failed")
