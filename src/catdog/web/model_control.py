"""Model control: which model versions serve, loading and warming them, hot swap, and the batch thread's work.

`ModelControl` holds one `Slot` per alias (production, and staging for A/B): the slot's
Predictor and its own MicroBatcher. A watcher thread asks the `ModelSource` every
`registry_poll_seconds` which model serves each alias. When one changes, the new model is loaded
and warmed beside the old one (which keeps serving), the slot reference is swapped under a lock,
requests that already hold the old slot finish on it, and its batcher is stopped once they
have. A model that fails to load or warm is never installed: the old one keeps serving,
`state.swap_error` says why, and the same target is retried only after a back-off (or at once
when the source names another). Like BentoML's runner/dispatcher split, this module knows
nothing of HTTP answers, caching or recording (catdog.web.service, catdog.web.recording).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catdog.ml.gradcam import overlay_png
from catdog.ml.predictor import Predictor
from catdog.settings import Settings
from catdog.timefmt import iso_utc
from catdog.web import metrics
from catdog.web.batching import BatchStats, MicroBatcher
from catdog.web.model_source import ALIASES, PRODUCTION, STAGING, ModelSource, ServedModel

log = logging.getLogger(__name__)

# A swap warms batch size 1 only: that first run is where ONNX Runtime sets itself up, and it runs
# the whole answer path (graph, pet gate, and Grad-CAM once) so a broken model never gets installed.
# Measured on this 2-core AVX2 box: a batch size's first run costs at most 0.15 s more than its
# next (VGG16 int8 and fp32, Lite0), while warming sizes 1..16 takes 18-30 s for VGG16 and would
# compete with the serving model for the cores all that time.
SWAP_WARMUP_SIZES = (1,)
RETRY_FIRST_S = 30.0  # a failed target is retried after this back-off (doubling, up to RETRY_MAX_S)
RETRY_MAX_S = 600.0
RETIRE_TIMEOUT_S = 300.0  # the longest a replaced model waits for the requests that hold it


@dataclass
class InferJob:
    """One image for the batch thread."""

    image: np.ndarray  # uint8 (S, S, 3), the model's input
    gate: np.ndarray | None  # uint8 input of an ImageNet-head pet gate, or None (the feature gate needs none)
    explain: bool = False  # also return the feature map (Grad-CAM is drawn off the batch thread)


@dataclass
class Inferred:
    """What one graph run gives for one image."""

    p_dog: float
    pet_score: float | None
    features: np.ndarray  # (C,) float32 pooled backbone features
    feature_map: np.ndarray | None  # (C, h, w) float32 for jobs that asked for an explanation, else None


@dataclass
class Slot:
    """One served model: its predictor, its own batcher, and how many requests hold it now."""

    served: ServedModel
    predictor: Predictor
    batcher: MicroBatcher[InferJob, Inferred]
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


class ModelControl:
    """The served models of one worker process; thread-safe.

    Args:
        settings: the process's settings (threads, precision, batching, registry_poll_seconds, A/B share).
        source: which model serves which alias; polled every `registry_poll_seconds`.
        model_dir_hint: the production directory to name before the first load.
        on_production_change: called after production is replaced (the drift window is cleared).
        observe_batch: called with every batch's BatchStats, on the batch thread (must be quick).
    """

    def __init__(
        self,
        settings: Settings,
        source: ModelSource,
        model_dir_hint: Path,
        *,
        on_production_change: Callable[[], None] = lambda: None,
        observe_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self._model_dir_hint = model_dir_hint
        self._on_production_change = on_production_change
        self._observe_batch = observe_batch
        self.state = ServiceState()
        self._slots: dict[str, Slot] = {}  # replaced whole under _slot_lock, never changed in place
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

    # --- what serves -----------------------------------------------------------------------------
    @property
    def predictor(self) -> Predictor | None:
        """The production predictor (None until the first model is loaded)."""
        slot = self._slots.get(PRODUCTION)
        return None if slot is None else slot.predictor

    @property
    def batcher(self) -> MicroBatcher[InferJob, Inferred] | None:
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

    # --- requests hold a slot while they run ------------------------------------------------------
    def pick(self) -> Slot:
        """Production, or staging with probability ab_staging_share; held until `let_go`."""
        with self._slot_lock:
            slot = self._slots[PRODUCTION]
            staging = self._slots.get(STAGING)
            if staging is not None and self._rng.random() < self.settings.ab_staging_share:
                slot = staging
            slot.users += 1
            return slot

    def hold(self, alias: str = PRODUCTION, model_version: str | None = None) -> Slot | None:
        """The slot of `alias` (or the one serving `model_version`), held until `let_go`; None when none."""
        with self._slot_lock:
            slots = self._slots
            if model_version is not None:
                slot = next((s for s in slots.values() if s.predictor.version == model_version), None)
            else:
                slot = slots.get(alias)
            if slot is not None:
                slot.users += 1
            return slot

    def let_go(self, slot: Slot) -> None:
        with self._slot_lock:
            slot.users -= 1

    def is_production(self, slot: Slot) -> bool:
        return slot is self._slots.get(PRODUCTION)

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

    def _log_ready(self, slot: Slot) -> None:
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

    def _open(self, target: ServedModel, sizes: Iterable[int], *, initial: bool = False) -> Slot:
        """A slot for `target`: its predictor (reused when another slot serves the same model), warmed, batching.

        Raises whatever loading or warming raises (ModelDirError, ONNX Runtime errors, ...).
        """
        twin = next((s for s in self._slots.values() if target.same_model(s.served)), None)
        if twin is not None:  # e.g. staging promoted to production: already loaded and warm
            predictor = twin.predictor
        else:
            predictor = Predictor(
                target.model_dir,
                threads=self.settings.threads,
                precision=self.settings.precision,
                cache_dir=self.settings.cache_dir,
                spin=self.settings.inference_spinning,
            )
            if initial:
                self.state.phase = "warming"
            self._warm_up(predictor, sizes)
        batcher: MicroBatcher[InferJob, Inferred] = MicroBatcher(
            functools.partial(infer_batch, predictor),
            max_batch_size=self.settings.max_batch_size,
            max_batch_wait_s=self.settings.max_batch_wait_ms / 1000,
            max_queue_size=self.settings.max_queue_size,
            on_batch=self._observe_batch,
            name=f"batcher-{target.alias}",
        )
        batcher.start()
        return Slot(target, predictor, batcher)

    def _warm_up(self, predictor: Predictor, sizes: Iterable[int]) -> None:
        """One run of the whole answer path per batch size, so no request pays a first-run allocation."""
        size = predictor.normalization.size
        gate = predictor.gate is not None
        image = np.full((size, size, 3), 127, np.uint8)
        for n in sizes:
            started = time.perf_counter()
            infer_batch(predictor, [InferJob(image, image if gate else None)] * n)
            log.info("warmed %s batch size %d in %.2f s", predictor.version, n, time.perf_counter() - started)
        # the explanation path once too: a model that cannot draw Grad-CAM is never installed
        explained = infer_batch(predictor, [InferJob(image, image if gate else None, explain=True)])
        heat_map_png(predictor, image, explained[0])

    def _install(self, alias: str, slot: Slot | None) -> None:
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
            self._on_production_change()  # e.g. the drift window describes the production model
        if old is not None:
            self._retire(old)

    def _retire(self, old: Slot) -> None:
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
        """Stop watching, answer what is queued, then stop the batch threads."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=60)
        for thread in self._retiring:
            thread.join(timeout=RETIRE_TIMEOUT_S)
        for slot in self._slots.values():
            slot.batcher.stop()

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

    def _swap(self, alias: str, target: ServedModel, current: Slot | None) -> None:
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
                    "at": iso_utc(failure.at),
                    "retry_in_seconds": round(max(0.0, failure.retry_at - now), 1),
                }
            )
        if self._source_failure is not None:
            why, at = self._source_failure
            found.append({"alias": None, "version": None, "reason": why, "at": iso_utc(at), "retry_in_seconds": None})
        return found


def infer_batch(predictor: Predictor, jobs: list[InferJob]) -> list[Inferred]:
    """The batch thread's whole work: one graph run (and the pet score from its features), nothing else."""
    images = np.stack([job.image for job in jobs])
    gates = [job.gate for job in jobs]
    gate_images = np.stack(gates) if all(g is not None for g in gates) else None  # type: ignore[arg-type]
    out = predictor.infer(images, gate_images, feature_map=any(job.explain for job in jobs))
    pet, maps = out.pet_score, out.feature_map
    return [
        Inferred(
            float(out.p_dog[i]),
            None if pet is None else float(pet[i]),
            out.features[i],
            maps[i] if maps is not None and job.explain else None,
        )
        for i, job in enumerate(jobs)
    ]


def _without_paths(text: str, model_dir: Path) -> str:
    """An error's text with the model directory's path taken out (answers show versions, not server paths)."""
    folder = str(model_dir)
    return text.replace(folder + "/", "").replace(folder, "the model folder")


def heat_map_png(predictor: Predictor, image: np.ndarray, inferred: Inferred) -> bytes:
    """Grad-CAM of the predicted class over the model input, as PNG bytes (catdog.ml.gradcam)."""
    assert inferred.feature_map is not None, "the job did not ask for the feature map"
    cam = predictor.cam_of(inferred.features[None], inferred.feature_map[None])[0]
    return overlay_png(image, cam)


def _show_model(alias: str, slot: Slot | None, value: int) -> None:
    """catdog_model_info: 1 for each served model, 0 for one that was replaced."""
    if slot is not None:
        predictor = slot.predictor
        version = "" if slot.served.registry_version is None else str(slot.served.registry_version)
        metrics.MODEL_INFO.labels(
            predictor.version, predictor.config.backbone, predictor.precision, alias, version
        ).set(value)
