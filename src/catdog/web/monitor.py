"""Background monitoring: drift of recent predictions against the model's reference, system health.

The drift statistics (a domain classifier with 1,000 permutations, K-S, PSI) take about half a
second of CPU, much of it in Python holding the GIL: run in a server thread, they stalled the
batch thread and the event loop and stretched the latency tail under load (measured with
webcheck: p95 6.1 s against 4.7 s without drift checks). They therefore run in a child process
of their own, at a lower CPU priority; this thread only collects the window and stores the
report.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from sqlalchemy.orm import Session, sessionmaker

from catdog.db import queries
from catdog.ml.drift import DriftReference, DriftReport
from catdog.web import metrics
from catdog.web.drift_worker import compute_in_child, start_child
from catdog.web.service import ModelService

log = logging.getLogger(__name__)


class DriftMonitor:
    """Every `interval` seconds, compare the service's recent window with the reference and store a report."""

    def __init__(self, service: ModelService, sessions: sessionmaker[Session], interval: float) -> None:
        self.service = service
        self.sessions = sessions
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reference: DriftReference | None = None
        self._reference_dir: Path | None = None  # the model directory the reference (and the child) belong to
        self.reference_error: str | None = None
        self._checked_at_count = -1
        self.latest: dict[str, Any] | None = None  # this worker's newest report, stored or not
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def start(self) -> None:
        CPU.prime()  # the first figure on /monitoring measures from here
        self._thread = threading.Thread(target=self._loop, name="drift", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._pool_lock:
            pool = self._pool
        if pool is not None:  # it only computes: end it now rather than wait for a check (or its imports)
            _end_child_processes(pool)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # the child exits before the worker does

    def _loop(self) -> None:
        # Lower this thread's priority first: the child process it starts inherits it, so even the
        # child's imports (numpy, SciPy, scikit-learn: seconds of CPU) never compete with serving.
        _lower_thread_priority()
        if self.reference() is not None:
            self._child_pool()
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                if self._stop.is_set():  # shutting down: the child process is already gone
                    return
                log.exception("drift check failed")

    def reference(self) -> DriftReference | None:
        self._follow_swaps()
        if self._reference is None and self.reference_error is None:
            self._reference_dir = self.service.model_dir
            try:
                self._reference = DriftReference.load(self.service.model_dir)
            except (OSError, ValueError, KeyError) as exc:
                self.reference_error = f"no drift reference in {self.service.model_dir}: {exc}"
                log.warning(self.reference_error)
        return self._reference

    def _follow_swaps(self) -> None:
        """After production was swapped, drop the old model's reference and drift child process."""
        current = self.service.model_dir
        if self._reference_dir is None or current == self._reference_dir:
            return
        log.info("production is now %s: drift is measured against its own reference", current)
        with self._pool_lock:
            old, self._pool = self._pool, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        self._reference, self.reference_error, self._reference_dir = None, None, None
        self._checked_at_count = -1
        self.latest = None

    def _compute(
        self, recent_p: np.ndarray, recent_features: np.ndarray, precision: str, min_samples: int
    ) -> DriftReport:
        """compute_drift in the child process, waiting for its answer."""
        future = self._child_pool().submit(compute_in_child, recent_p, recent_features, precision, min_samples)
        return future.result(timeout=600)

    def _child_pool(self) -> ProcessPoolExecutor:
        """The one-process pool that computes drift; its process starts (and imports) right away."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=start_child,
                    initargs=(str(self.service.model_dir), os.getpid()),  # it ends with this process
                )
                self._pool.submit(int)  # start the process now, from the calling (low-priority) thread
            return self._pool

    def check(self) -> dict[str, Any] | None:
        """Compute one report now (stored when the prediction check ran); None without news or reference."""
        reference, predictor = self.reference(), self.service.predictor
        if reference is None or predictor is None:
            return None
        count = self.service.recent_count
        if count == self._checked_at_count:
            return self.latest
        recent_p, recent_features = self.service.recent_window()
        min_samples = self.service.settings.drift_min_samples
        report = self._compute(recent_p, recent_features, predictor.precision, min_samples)
        self._checked_at_count = count
        self.latest = {**report.to_dict(), "model_version": predictor.version}
        values = report.values
        if values["ks_statistic"] is not None and values["ks_p_value"] is not None and values["psi"] is not None:
            with self.sessions() as session:
                queries.save_drift_report(
                    session,
                    model_version=predictor.version,
                    window_size=report.window_size,
                    ks_statistic=values["ks_statistic"],
                    ks_p_value=values["ks_p_value"],
                    psi=values["psi"],
                    prediction_drift=bool(report.prediction["drift"]),
                    domain_auc=values["domain_auc"],
                    domain_threshold=report.feature.get("auc_threshold"),
                    feature_drift=report.feature["drift"],
                    details=self.latest,
                )
        _export(report.to_dict())
        return self.latest


def _end_child_processes(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to the pool's processes (a drift check keeps nothing: its report is simply not made).

    At nice 19 on a busy machine, the child's start (NumPy, SciPy, scikit-learn imports) can take
    many seconds; waiting for it made `kill -TERM` of the server (docker stop: 10 s) take as long.
    """
    processes = getattr(pool, "_processes", None) or {}  # ProcessPoolExecutor's own table (3.8-3.13)
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()


def _lower_thread_priority(niceness: int = 19) -> None:
    """The calling thread's CPU priority, lowered where the OS allows it (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        log.debug("cannot lower the drift thread's priority here")


def _export(report: dict[str, Any]) -> None:
    for test, value in (report.get("values") or {}).items():
        if value is not None:
            metrics.DRIFT.labels(test).set(value)
    for kind in ("prediction", "feature"):
        fired = (report.get(kind) or {}).get("drift")
        if fired is not None:
            metrics.DRIFT_DETECTED.labels(kind).set(1 if fired else 0)


class CpuUsage:
    """The machine's CPU use, percent of all cores, between readings, whichever thread reads.

    psutil.cpu_percent(interval=None) keeps its previous reading per calling thread, and the
    first call from a thread says 0.0: /api/monitoring runs in the server's thread pool, so the
    first figure after a start read 0.0% however busy the machine was. This keeps one previous
    reading per process (taken by prime(), at start), and measures over at least `min_interval`
    seconds: the first reading waits out the rest of it; a reading sooner than that after the
    previous one repeats the previous figure. Thread-safe.

    Formula (psutil's): busy = total - idle - iowait over the system's CPU times (on Linux the
    guest times are already in user and nice, so they leave the total); percent = 100 *
    delta busy / delta total, clamped to [0, 100].
    """

    def __init__(self, min_interval: float = 0.25) -> None:
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._previous = psutil.cpu_times()
        self._previous_at = time.monotonic()
        self._figure: float | None = None

    def prime(self) -> None:
        """Measure the next figure from now."""
        with self._lock:
            self._previous, self._previous_at, self._figure = psutil.cpu_times(), time.monotonic(), None

    def percent(self) -> float:
        """CPU use since the previous reading (percent of all cores, 0-100); blocks at most min_interval s."""
        with self._lock:
            waited = time.monotonic() - self._previous_at
            if waited < self.min_interval:
                if self._figure is not None:
                    return self._figure
                time.sleep(self.min_interval - waited)
            now = psutil.cpu_times()
            busy_before, total_before = _busy_and_total(self._previous)
            busy, total = _busy_and_total(now)
            if total > total_before:
                self._figure = round(min(100.0, max(0.0, 100.0 * (busy - busy_before) / (total - total_before))), 1)
                self._previous, self._previous_at = now, time.monotonic()
            return self._figure if self._figure is not None else 0.0


def _busy_and_total(times: Any) -> tuple[float, float]:
    """(busy, total) seconds of psutil.cpu_times(), as psutil.cpu_percent counts them."""
    total = float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


CPU = CpuUsage()  # one per process: every thread reads the same figure


def system_health(started_at: float) -> dict[str, Any]:
    """CPU (percent of all cores), memory (bytes and percent), this process, uptime (seconds)."""
    memory = psutil.virtual_memory()
    process = psutil.Process(os.getpid())
    return {
        "cpu_percent": CPU.percent(),
        "cpu_count": psutil.cpu_count(),
        "load_average": list(os.getloadavg()),
        "memory_percent": memory.percent,
        "memory_used_bytes": memory.total - memory.available,
        "memory_total_bytes": memory.total,
        "process_rss_bytes": process.memory_info().rss,
        "uptime_seconds": round(time.time() - started_at, 1),
    }
