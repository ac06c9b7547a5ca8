"""The served models: admission, prediction cache, decoding off the event loop, batching, recording, hot swap.

One `ModelService` per worker process. A request's image goes: admission (503 past the queue
bound) -> the slot that answers it (production, or staging for a share of them) -> content
hash -> prediction cache -> decode (thread pool) -> that slot's MicroBatcher (one ONNX Runtime
run for many requests, P(dog), pooled features and the Grad-CAM map at once) -> answer;
recording (database, metrics, drift window, explanation file) never delays the answer by more
than a queue put.

Hot swap: a watcher thread asks the `ModelSource` every `registry_poll_seconds` which model
serves each alias. When one changes, the new model is loaded and warmed beside the old one
(which keeps serving), the slot reference is swapped under a lock, requests that already hold
the old slot finish on it, and its batcher is stopped once they have. A model that fails to
load or warm is never installed: the old one keeps serving, `state.swap_error` says why, and
the same target is retried only after a back-off (or at once when the source names another).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import LRUCache

from catdog.db.writer import PredictionRecord, PredictionWriter
from catdog.ml.gradcam import overlay_png
from catdog.ml.predictor import Predictor
from catdog.ml.preprocessing import ImageDecodeError
from catdog.settings import Settings
from catdog.uploads import ModelOpinion
from catdog.web import metrics
from catdog.web.batching import BatcherStopped, BatchStats, MicroBatcher, Overloaded
from catdog.web.explanations import ExplanationStore
from catdog.web.model_source import ALIASES, PRODUCTION, STAGING, ModelSource, PinnedSource, ServedModel

log = logging.getLogger(__name__)

CLASS_FOLDERS = {"cat": "cats", "dog": "dogs"}
INLINE_HASH_BYTES = 1 << 20  # uploads under 1 MiB are hashed on the event loop (well under a millisecond)
# A swap warms batch size 1 only: that first run is where ONNX Runtime sets itself up, and it runs
# the whole answer path (graph, pet gate, Grad-CAM) once, so a broken model never gets installed.
# Measured on this 2-core AVX2 box: a batch size's first run costs at most 0.15 s more than its
# next (VGG16 int8 and fp32, Lite0), while warming sizes 1..16 takes 18-30 s for VGG16 and would
# compete with the serving model for the cores all that time.
SWAP_WARMUP_SIZES = (1,)
RETRY_FIRST_S = 30.0  # a failed target is retried after this back-off (doubling, up to RETRY_MAX_S)
RETRY_MAX_S = 600.0
RETIRE_TIMEOUT_S = 300.0  # the longest a replaced model waits for the requests that hold it


class NotReady(Exception):
    """The model is still loading or warming up."""


class UploadTooLarge(Exception):
    """One uploaded file is over the size cap."""


@dataclass
class _Job:
    image: np.ndarray  # uint8 (S, S, 3), the model's input
    gate: np.ndarray | None  # uint8 input of the pet gate, or None


@dataclass
class _Inferred:
    p_dog: float
    pet_score: float | None
    features: np.ndarray  # (C,) pooled backbone features
    cam: np.ndarray  # (h, w) in [0, 1], Grad-CAM of the predicted class


@dataclass
class _Cached:
    answer: dict[str, Any]
    prediction_id: str  # the original, whose explanation a cached answer shares


@dataclass
class _Slot:
    """One served model: its predictor, its own batcher, and how many requests hold it now."""

    served: ServedModel
    predictor: Predictor
    batcher: MicroBatcher[_Job, _Inferred]
    users: int = 0  # requests that picked this slot and have not finished (guarded by the slot lock)

    def describe(self) -> str:
        return f"{self.predictor.version} (registry version {self.served.registry_version})"


@dataclass
class _Failure:
    target: ServedModel
    retry_at: float  # time.monotonic() seconds
    backoff_s: float
    message: str
    reason: str = ""  # "ModelDirError: model_config.json is missing": no server path (for the API)
    at: float = field(default_factory=time.time)  # time.time() of the latest failure


@dataclass
class ServiceState:
    phase: str = "starting"  # starting, loading, warming, ready, failed
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    swap_error: str | None = None  # why a newer model is not served (the older one still is), else None
    swaps: int = 0  # models installed after the first one
    last_swap_at: float | None = None  # time.time() of the latest swap
    last_swap_seconds: float | None = None  # loading + warming + swapping it took, seconds


class ModelService:
    """Serve the source's production model (and staging for a share of predictions); thread-safe.

    Args:
        settings: the process's settings.
        model_dir: the production model directory when no `source` is given (PinnedSource).
        writer: where prediction records go (None: not recorded).
        source: which model serves which alias; polled every `registry_poll_seconds`.
    Raises ValueError when neither model_dir nor source is given.
    """

    def __init__(
        self,
        settings: Settings,
        model_dir: Path | None = None,
        writer: PredictionWriter | None = None,
        *,
        source: ModelSource | None = None,
    ) -> None:
        if source is None:
            if model_dir is None:
                raise ValueError("ModelService needs a model directory or a model source")
            source = PinnedSource(model_dir)
        self.settings = settings
        self.source: ModelSource = source
        self._model_dir_hint = Path(model_dir) if model_dir is not None else Path()
        self.writer = writer
        self.state = ServiceState()
        self._slots: dict[str, _Slot] = {}  # replaced whole under _slot_lock, never changed in place
        self._slot_lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll (load, warm, swap) at a time
        self._failures: dict[str, _Failure] = {}
        # registry versions that failed to load in this process, kept after their alias moves on
        # (a rollback must not land on one): version -> reason; dropped once one loads
        self.unloadable: dict[int, str] = {}
        self._source_failure: tuple[str, float] | None = None  # (why, time.time()) the source itself failed
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._retiring: list[threading.Thread] = []
        self._rng = random.Random()  # A/B draws; seeded from the OS per process
        self.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.side_pool = ThreadPoolExecutor(1, thread_name_prefix="record")  # explanation files
        self.cache: LRUCache[tuple[str, str], _Cached] = LRUCache(maxsize=max(1, settings.prediction_cache_size))
        self._cache_lock = threading.Lock()
        self.explanations = ExplanationStore(settings.state_dir / "explanations", settings.explanations_kept)
        self.in_flight = 0  # images admitted and not yet answered (only touched on the event loop)
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=settings.drift_window)  # (P(dog), features)
        self.recent_count = 0  # inferred predictions so far: tells the drift monitor whether the window moved

    # --- what serves -----------------------------------------------------------------------------
    @property
    def predictor(self) -> Predictor | None:
        """The production predictor (None until the first model is loaded)."""
        slot = self._slots.get(PRODUCTION)
        return None if slot is None else slot.predictor

    @property
    def batcher(self) -> MicroBatcher[_Job, _Inferred] | None:
        """The production model's batcher (None until the first model is loaded)."""
        slot = self._slots.get(PRODUCTION)
        return None if slot is None else slot.batcher

    @property
    def model_dir(self) -> Path:
        """The production model's directory (before the first load: the one being loaded)."""
        slot = self._slots.get(PRODUCTION)
        return self._model_dir_hint if slot is None else slot.served.model_dir

    def served(self) -> dict[str, dict[str, Any] | None]:
        """What answers now: {"production": {"version": int | None, "model_version": str} | None, "staging": ...}.

        "version" is the registry version (None for a pinned directory), "model_version" the content id.
        """
        slots = self._slots
        return {
            alias: None
            if alias not in slots
            else {"version": slots[alias].served.registry_version, "model_version": slots[alias].predictor.version}
            for alias in ALIASES
        }

    @property
    def ready(self) -> bool:
        return self.state.phase == "ready"

    # --- life cycle ------------------------------------------------------------------------------
    def load(self) -> None:
        """Load production, warm every batch size, start serving, then start watching the source.

        Blocking (run it in a thread). A failure leaves phase "failed" with the reason in
        state.error; the watcher retries after a back-off, or at once when the source changes.
        """
        target: ServedModel | None = None
        try:
            self.state.phase = "loading"
            target = self._production_target(self.source.resolve())
            self._model_dir_hint = target.model_dir
            slot = self._open(target, self.settings.warmup_sizes(), initial=True)
            self._install(PRODUCTION, slot)
            self.state.ready_at = time.time()
            self.state.phase = "ready"
            self._log_ready(slot)
        except Exception as exc:
            self.state.phase, self.state.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")
            if target is not None:
                self._failed(PRODUCTION, target, exc)
        finally:
            self._start_watcher()

    def _production_target(self, targets: dict[str, ServedModel]) -> ServedModel:
        if PRODUCTION not in targets:
            raise LookupError(f"{self.source!r} names no production model")
        return targets[PRODUCTION]

    def _log_ready(self, slot: _Slot) -> None:
        predictor = slot.predictor
        log.info(
            "ready on http://%s:%d (model %s, %s)",
            self.settings.host,
            self.settings.port,
            predictor.version,
            predictor.precision,
            extra={
                "model_version": predictor.version,
                "registry_version": slot.served.registry_version,
                "precision": predictor.precision,
                "model_dir": str(slot.served.model_dir),
            },
        )

    def _open(self, target: ServedModel, sizes: Iterable[int], *, initial: bool = False) -> _Slot:
        """A slot for `target`: its predictor (reused when another slot serves the same model), warmed, batching.

        Raises whatever loading or warming raises (ModelDirError, ONNX Runtime errors, ...).
        """
        twin = next((s for s in self._slots.values() if target.same_model(s.served)), None)
        if twin is not None:  # e.g. staging promoted to production: already loaded and warm
            predictor = twin.predictor
        else:
            predictor = Predictor(target.model_dir, threads=self.settings.threads, precision=self.settings.precision)
            if initial:
                self.state.phase = "warming"
            self._warm_up(predictor, sizes)
        batcher: MicroBatcher[_Job, _Inferred] = MicroBatcher(
            functools.partial(self._infer, predictor),
            max_batch_size=self.settings.max_batch_size,
            max_batch_wait_s=self.settings.max_batch_wait_ms / 1000,
            max_queue_size=self.settings.max_queue_size,
            on_batch=_observe_batch,
            name=f"batcher-{target.alias}",
        )
        batcher.start()
        return _Slot(target, predictor, batcher)

    def _warm_up(self, predictor: Predictor, sizes: Iterable[int]) -> None:
        """One run of the whole answer path per batch size, so no request pays a first-run allocation."""
        size = predictor.normalization.size
        gate = predictor.gate is not None
        for n in sizes:
            image = np.full((size, size, 3), 127, np.uint8)
            started = time.perf_counter()
            self._infer(predictor, [_Job(image, image if gate else None)] * n)
            log.info("warmed %s batch size %d in %.2f s", predictor.version, n, time.perf_counter() - started)

    def _install(self, alias: str, slot: _Slot | None) -> None:
        """Swap `alias` to `slot` (None: stop serving it) at once; the old slot retires in the background."""
        if slot is not None and self._stopping.is_set():
            slot.batcher.stop()
            return
        with self._slot_lock:
            old = self._slots.get(alias)
            slots = {k: v for k, v in self._slots.items() if k != alias}
            if slot is not None:
                slots[alias] = slot
            self._slots = slots
        _show_model(alias, old, 0)
        _show_model(alias, slot, 1)
        if alias == PRODUCTION and old is not None:
            self.recent.clear()  # the drift window describes the production model
        if old is not None:
            self._retire(old)

    def _retire(self, old: _Slot) -> None:
        """Stop the old slot's batcher once no request holds the slot (they finish on it first)."""

        def wait_then_stop() -> None:
            deadline = time.monotonic() + RETIRE_TIMEOUT_S
            while old.users > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            if old.users > 0:
                log.warning("%d requests still hold %s after %.0f s", old.users, old.describe(), RETIRE_TIMEOUT_S)
            old.batcher.stop()  # answers whatever is still queued
            log.info("retired %s", old.describe())

        thread = threading.Thread(target=wait_then_stop, name="retire", daemon=True)
        self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]
        thread.start()

    def close(self) -> None:
        """Stop watching, answer what is queued, then stop threads (the database writer is closed by its owner)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=60)
        for thread in self._retiring:
            thread.join(timeout=RETIRE_TIMEOUT_S)
        for slot in self._slots.values():
            slot.batcher.stop()
        self.decode_pool.shutdown(wait=True)
        self.side_pool.shutdown(wait=True)

    # --- watching the source (the watcher thread) ---------------------------------------------------
    def _start_watcher(self) -> None:
        if self._watcher is None and not self._stopping.is_set():
            self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.settings.registry_poll_seconds):
            try:
                self.poll()
            except Exception:  # never let anything end the watcher
                log.exception("model source poll failed")

    def poll(self) -> None:
        """Ask the source once and swap every alias whose model changed (blocking: loads and warms)."""
        with self._poll_lock:
            try:
                targets = self.source.resolve()
            except Exception as exc:
                self.state.swap_error = f"the model source failed: {type(exc).__name__}: {exc}"
                self._source_failure = (self.state.swap_error, time.time())
                log.warning("model source %r failed: %s", self.source, exc)
                return
            self._source_failure = None
            wanted = self._wanted(targets)
            for alias in ALIASES:
                self._reconcile(alias, wanted[alias])
            self.state.swap_error = self._failure_text()

    def _failure_text(self) -> str | None:
        return "; ".join(f.message for f in self._failures.values()) or None

    def _wanted(self, targets: dict[str, ServedModel]) -> dict[str, ServedModel | None]:
        """Production as the source says (kept when it names none); staging only for A/B and when different."""
        production = targets.get(PRODUCTION)
        staging = targets.get(STAGING)
        if self.settings.ab_staging_share <= 0 or staging is None or staging.same_model(production):
            staging = None
        return {PRODUCTION: production, STAGING: staging}

    def _reconcile(self, alias: str, target: ServedModel | None) -> None:
        current = self._slots.get(alias)
        if target is None:
            self._failures.pop(alias, None)
            if alias == STAGING and current is not None:
                log.info("staging %s is no longer served", current.describe())
                self._install(STAGING, None)
            return  # production without a target keeps serving what it serves
        if current is not None and target.same_model(current.served):
            self._failures.pop(alias, None)  # back to what serves: an earlier failure no longer matters
            return
        failure = self._failures.get(alias)
        if failure is not None and failure.target == target and time.monotonic() < failure.retry_at:
            return
        self._swap(alias, target, current)

    def _swap(self, alias: str, target: ServedModel, current: _Slot | None) -> None:
        """Load and warm `target` beside the current slot, then install it; on failure keep the current one."""
        started = time.perf_counter()
        first = alias == PRODUCTION and current is None  # nothing serves yet: a start-up load after all
        if first:
            self.state.phase = "loading"
        sizes = self.settings.warmup_sizes() if current is None else SWAP_WARMUP_SIZES
        try:
            slot = self._open(target, sizes, initial=first)
        except Exception as exc:
            if first:
                self.state.phase = "failed"
            self._failed(alias, target, exc)
            return
        self._failures.pop(alias, None)  # the state first, so whoever sees the new model sees it too
        if target.registry_version is not None:
            self.unloadable.pop(target.registry_version, None)
        self.state.swap_error = self._failure_text()
        seconds = time.perf_counter() - started
        self.state.swaps += 1
        self.state.last_swap_at, self.state.last_swap_seconds = time.time(), seconds
        self._install(alias, slot)
        old = current.describe() if current else "nothing"
        log.info("%s: %s replaces %s after %.2f s", alias, slot.describe(), old, seconds)
        if alias == PRODUCTION and not self.ready:  # the first load had failed: serving now
            self.state.ready_at = time.time()
            self.state.phase, self.state.error = "ready", None
            self._log_ready(slot)

    def _failed(self, alias: str, target: ServedModel, exc: Exception) -> None:
        """Remember a failed target: retried after a doubling back-off, or when the source names another."""
        previous = self._failures.get(alias)
        backoff = RETRY_FIRST_S
        if previous is not None and previous.target == target:
            backoff = min(previous.backoff_s * 2, RETRY_MAX_S)
        message = (
            f"{alias} registry version {target.registry_version} ({target.model_dir}) failed to load: "
            f"{type(exc).__name__}: {exc}; retry in {backoff:.0f} s"
        )
        reason = _without_paths(f"{type(exc).__name__}: {exc}", target.model_dir)
        self._failures[alias] = _Failure(target, time.monotonic() + backoff, backoff, message, reason)
        if target.registry_version is not None:
            self.unloadable[target.registry_version] = reason
        self.state.swap_error = message
        if alias == PRODUCTION and not self.ready:
            self.state.error = f"{type(exc).__name__}: {exc}"
        log.error("%s", message, exc_info=exc)

    def swap_failures(self) -> list[dict[str, Any]]:
        """Why a model the source names is not served by this process (the one before it still is).

        [{"alias": "production" | "staging" | None, "version": registry version | None, "reason":
        one line without server paths, "at": ISO 8601 UTC of the latest try, "retry_in_seconds":
        float | None}], production first; alias and version are None when the source itself
        failed (the registry could not be asked). [] when every alias serves what the source names.
        """
        now, found = time.monotonic(), []
        for alias, failure in sorted(self._failures.items(), key=lambda item: ALIASES.index(item[0])):
            found.append(
                {
                    "alias": alias,
                    "version": failure.target.registry_version,
                    "reason": failure.reason or failure.message,
                    "at": _iso(failure.at),
                    "retry_in_seconds": round(max(0.0, failure.retry_at - now), 1),
                }
            )
        if self._source_failure is not None:
            why, at = self._source_failure
            found.append({"alias": None, "version": None, "reason": why, "at": _iso(at), "retry_in_seconds": None})
        return found

    # --- the batch threads ---------------------------------------------------------------------------
    def _run_batch(self, jobs: list[_Job]) -> list[_Inferred]:
        """One run of the production model (each slot's batcher runs `_infer` with its own predictor)."""
        predictor = self.predictor
        assert predictor is not None
        return self._infer(predictor, jobs)

    @staticmethod
    def _infer(predictor: Predictor, jobs: list[_Job]) -> list[_Inferred]:
        images = np.stack([job.image for job in jobs])
        gates = [job.gate for job in jobs]
        gate_images = np.stack(gates) if all(g is not None for g in gates) else None  # type: ignore[arg-type]
        out = predictor.infer(images, gate_images)
        cams = predictor.cams(out)  # Grad-CAM of each image's predicted class
        pet = out.pet_score
        return [
            _Inferred(float(out.p_dog[i]), None if pet is None else float(pet[i]), out.features[i], cams[i])
            for i in range(len(jobs))
        ]

    # --- requests (on the event loop) --------------------------------------------------------------
    def admit(self, n: int) -> None:
        """Reserve room for n images, or refuse at once (NotReady / Overloaded)."""
        if not self.ready or self.batcher is None:
            metrics.REJECTIONS.labels("not_ready").inc(n)
            raise NotReady(self.state.error or f"the model is {self.state.phase}")
        if self.in_flight + n > self.settings.max_queue_size:
            metrics.REJECTIONS.labels("queue_full").inc(n)
            raise Overloaded(self.batcher.retry_after(self.in_flight), self.in_flight)
        self.in_flight += n
        metrics.QUEUE_DEPTH.set(self.in_flight)

    def refusal(self) -> tuple[str, float] | None:
        """(detail, retry after s) when not even one more image fits (EarlyRefusal's test), else None."""
        if not self.ready or self.batcher is None:
            return f"not ready: the model is {self.state.phase}", 5.0
        if self.in_flight >= self.settings.max_queue_size:
            metrics.REJECTIONS.labels("queue_full").inc()
            retry_after = self.batcher.retry_after(self.in_flight)
            return str(Overloaded(retry_after, self.in_flight)), retry_after
        return None

    def release(self, n: int) -> None:
        self.in_flight -= n
        metrics.QUEUE_DEPTH.set(self.in_flight)

    async def opinion(self, data: bytes) -> ModelOpinion | None:
        """The production model's class and P(dog) for an image that is not a prediction (a training upload).

        The prediction path (admission, the prediction cache, decoding in the pool, the batcher),
        but nothing is recorded: no prediction row, metric, drift window or explanation. None when
        the model is not ready, the queue is full, or the bytes are no image (the caller says why).
        """
        try:
            self.admit(1)
        except (NotReady, Overloaded):
            return None
        with self._slot_lock:
            slot = self._slots.get(PRODUCTION)
            if slot is not None:
                slot.users += 1
        try:
            if slot is None:
                return None
            loop = asyncio.get_running_loop()
            digest = await loop.run_in_executor(self.decode_pool, _sha256, data)
            cached = self._cache_get((digest, slot.predictor.version))
            if cached is not None:
                p_dog = float(cached.answer["probability"])
            else:
                image, gate = await loop.run_in_executor(self.decode_pool, slot.predictor.decode, data)
                inferred, _ = await slot.batcher.submit(_Job(image, gate))
                p_dog = inferred.p_dog
            prediction = slot.predictor.prediction(None, p_dog, None)
            return ModelOpinion(prediction.predicted_class, prediction.probability)
        except (ImageDecodeError, Overloaded, BatcherStopped):
            return None
        finally:
            if slot is not None:
                with self._slot_lock:
                    slot.users -= 1
            self.release(1)

    async def predict(
        self, data: bytes, *, filename: str | None, endpoint: str, request_id: str | None, explain: bool = False
    ) -> dict[str, Any]:
        """One admitted image -> the answer dict. Raises ImageDecodeError for unreadable bytes.

        The slot picked here answers the whole request, even when a swap replaces it meanwhile.
        """
        slot = self._pick()
        try:
            return await self._predict_on(slot, data, filename, endpoint, request_id, explain)
        finally:
            with self._slot_lock:
                slot.users -= 1

    def _pick(self) -> _Slot:
        """Production, or staging with probability ab_staging_share; held until the request ends."""
        with self._slot_lock:
            slot = self._slots[PRODUCTION]
            staging = self._slots.get(STAGING)
            if staging is not None and self._rng.random() < self.settings.ab_staging_share:
                slot = staging
            slot.users += 1
            return slot

    async def _predict_on(
        self, slot: _Slot, data: bytes, filename: str | None, endpoint: str, request_id: str | None, explain: bool
    ) -> dict[str, Any]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        if len(data) < INLINE_HASH_BYTES:
            digest = hashlib.sha256(data).hexdigest()
        else:  # hashing 20 MB takes ~40 ms: not on the event loop
            digest = await loop.run_in_executor(self.decode_pool, _sha256, data)
        key = (digest, slot.predictor.version)  # answers never cross model versions
        cached = self._cache_get(key)
        batch_size = None
        if cached is not None:
            metrics.CACHE.labels("hit").inc()
            answer = self._answer_from_cache(slot, cached, filename, started)
        else:
            metrics.CACHE.labels("miss").inc()
            answer, batch_size = await self._infer_answer(slot, data, filename, started, explain)
            self._cache_put(key, answer)
        if explain and "explanation" not in answer:
            answer["explanation"] = await self.explanation_data_url(answer["prediction_id"])
        self._record(answer, digest, endpoint, request_id, batch_size)
        return answer

    async def _infer_answer(
        self, slot: _Slot, data: bytes, filename: str | None, started: float, explain: bool
    ) -> tuple[dict[str, Any], int]:
        """Decode, run through the slot's batcher, answer; (answer, images in the run)."""
        loop = asyncio.get_running_loop()
        image, gate = await loop.run_in_executor(self.decode_pool, slot.predictor.decode, data)
        inferred, stats = await slot.batcher.submit(_Job(image, gate))
        answer = self._answer(slot, inferred, filename, started)
        if slot is self._slots.get(PRODUCTION):  # the drift window describes the production model
            self.recent.append((inferred.p_dog, inferred.features))
            self.recent_count += 1
        self.side_pool.submit(self.explanations.save, answer["prediction_id"], image, inferred.cam)
        if explain:
            png = await loop.run_in_executor(self.decode_pool, overlay_png, image, inferred.cam)
            answer["explanation"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return answer, stats.size

    async def explanation_png(self, prediction_id: str) -> bytes | None:
        """The heat map over the photo for a recent prediction, or None when unknown or pruned."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self.decode_pool, self.explanations.load, prediction_id)
        if found is None:
            return None
        image, cam = found
        return await loop.run_in_executor(self.decode_pool, overlay_png, image, cam)

    async def explanation_data_url(self, prediction_id: str) -> str | None:
        png = await self.explanation_png(prediction_id)
        return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()

    # --- helpers ---------------------------------------------------------------------------------------
    def _answer(self, slot: _Slot, inferred: _Inferred, filename: str | None, started: float) -> dict[str, Any]:
        prediction = slot.predictor.prediction(filename, inferred.p_dog, inferred.pet_score)
        is_dog = prediction.predicted_class == "dog"
        prediction_id = uuid.uuid4().hex
        answer: dict[str, Any] = {
            "prediction_id": prediction_id,
            "filename": filename,
            "predicted_class": prediction.predicted_class,
            "class": CLASS_FOLDERS[prediction.predicted_class],
            "class_index": int(is_dog),
            "probability": prediction.probability,
            "confidence": prediction.confidence,
            "confidence_percentage": f"{prediction.confidence:.2%}",
            "is_pet": prediction.is_pet,
            "pet_score": prediction.pet_score,
            "is_valid": prediction.is_pet is not False,
            "message": None if prediction.is_pet is not False else "This does not look like a cat or a dog.",
            "model_version": slot.predictor.version,
            "registry_version": slot.served.registry_version,
            "precision": slot.predictor.precision,
            "cached": False,
            "explanation_url": f"/api/explain/{prediction_id}",
        }
        return self._stamp(answer, started)

    def _answer_from_cache(self, slot: _Slot, cached: _Cached, filename: str | None, started: float) -> dict[str, Any]:
        prediction_id = uuid.uuid4().hex
        self.explanations.alias(prediction_id, cached.prediction_id)
        answer = {**cached.answer, "prediction_id": prediction_id, "filename": filename, "cached": True}
        answer["registry_version"] = slot.served.registry_version  # the same files may be a newer version
        answer["explanation_url"] = f"/api/explain/{prediction_id}"
        return self._stamp(answer, started)

    @staticmethod
    def _stamp(answer: dict[str, Any], started: float) -> dict[str, Any]:
        answer["prediction_time"] = round(time.perf_counter() - started, 6)
        answer["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return answer

    def _cache_get(self, key: tuple[str, str]) -> _Cached | None:
        if self.settings.prediction_cache_size == 0:
            return None
        with self._cache_lock:
            return self.cache.get(key)

    def _cache_put(self, key: tuple[str, str], answer: dict[str, Any]) -> None:
        if self.settings.prediction_cache_size == 0:
            return
        keep = {k: v for k, v in answer.items() if k not in {"explanation", "prediction_time", "timestamp"}}
        with self._cache_lock:
            self.cache[key] = _Cached(keep, answer["prediction_id"])

    def _record(
        self, answer: dict[str, Any], digest: str, endpoint: str, request_id: str | None, batch_size: int | None
    ) -> None:
        metrics.PREDICTIONS.labels(
            answer["predicted_class"], answer["model_version"], str(answer["cached"]).lower()
        ).inc()
        if self.writer is None:
            return
        try:
            record = PredictionRecord(
                id=answer["prediction_id"],
                created_at=datetime.now(UTC),
                model_version=answer["model_version"],
                precision=answer["precision"],
                endpoint=endpoint,
                predicted_class=answer["predicted_class"],
                p_dog=answer["probability"],
                confidence=answer["confidence"],
                is_pet=answer["is_pet"],
                pet_score=answer["pet_score"],
                latency_ms=answer["prediction_time"] * 1000,
                cached=answer["cached"],
                batch_size=batch_size,
                content_sha256=digest,
                request_id=request_id,
            )
        except ValueError:  # the answer is already made: a record the database would refuse is only logged
            log.exception("prediction %s not recorded", answer["prediction_id"])
            return
        self.writer.submit(record)

    def recent_window(self) -> tuple[np.ndarray, np.ndarray]:
        """(P(dog) (n,), features (n, C)) of the last drift_window inferred predictions."""
        items = list(self.recent)
        if not items:
            return np.zeros(0), np.zeros((0, 0), np.float32)
        return np.array([p for p, _ in items]), np.stack([f for _, f in items])


def _without_paths(text: str, model_dir: Path) -> str:
    """An error's text with the model directory's path taken out (answers show versions, not server paths)."""
    folder = str(model_dir)
    return text.replace(folder + "/", "").replace(folder, "the model folder")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _show_model(alias: str, slot: _Slot | None, value: int) -> None:
    """catdog_model_info: 1 for each served model, 0 for one that was replaced."""
    if slot is not None:
        predictor = slot.predictor
        version = "" if slot.served.registry_version is None else str(slot.served.registry_version)
        metrics.MODEL_INFO.labels(
            predictor.version, predictor.config.backbone, predictor.precision, alias, version
        ).set(value)


def _observe_batch(stats: BatchStats) -> None:
    metrics.BATCH_SIZE.observe(stats.size)
    metrics.INFERENCE_SECONDS.observe(stats.seconds)
