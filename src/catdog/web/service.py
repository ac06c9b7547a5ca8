"""Answering predictions: admission, the prediction cache, decoding off the event loop, the answer itself.

One `ModelService` per worker process. A request's image goes: admission (503 past the queue
bound) -> the slot that answers it (production, or staging for a share of them) -> content
hash -> prediction cache -> decode (thread pool) -> that slot's MicroBatcher (one ONNX Runtime
run for many requests: P(dog) and the pooled features, whose distance to the training features
is the pet score) -> answer. The batch thread runs the model and nothing else: recording
(database, metrics, drift window, the kept input for a later explanation) happens on the event
loop or the recording thread, and never delays the answer by more than a queue put. Grad-CAM is
drawn only for requests that ask (`explain=true`), from the feature map that the same run
returns for them, off the batch thread; `/api/explain/{id}` computes it later for any kept input.

Hot swap: a watcher thread asks the `ModelSource` every `registry_poll_seconds` which model
serves each alias. When one changes, the new model is loaded and warmed beside the old one
(which keeps serving), the slot reference is swapped under a lock, requests that already hold
the old slot finish on it, and its batcher is stopped once they have. A model that fails to
load or warm is never installed: the old one keeps serving, `state.swap_error` says why, and
the same target is retried only after a back-off (or at once when the source names another).

The work is split by responsibility, as BentoML keeps its dispatcher, service and server apart:
catdog.web.model_control (which models serve, loading, warming, hot swap, the batch thread's
work), catdog.web.prediction_cache (answers by content and model version), catdog.web.recording
(metrics, database rows, drift window, kept inputs) and this module, which admits a request,
answers it with those parts, and keeps the `ModelService` interface the routes use.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from catdog.db.writer import PredictionWriter
from catdog.errors import CatdogError
from catdog.ml.gradcam import overlay_png
from catdog.ml.predictor import Predictor
from catdog.ml.preprocessing import ImageDecodeError
from catdog.settings import Settings
from catdog.timefmt import iso_utc
from catdog.uploads import ModelOpinion
from catdog.web import metrics
from catdog.web.batching import BatcherStopped, MicroBatcher, Overloaded
from catdog.web.explanations import ExplanationStore
from catdog.web.model_control import (
    InferJob,
    Inferred,
    ModelControl,
    ServiceState,
    Slot,
    heat_map_png,
)
from catdog.web.model_source import ModelSource, PinnedSource
from catdog.web.prediction_cache import CachedAnswer, PredictionCache
from catdog.web.problems import NotReady, UploadTooLarge
from catdog.web.recording import Recorder

__all__ = ["ExplanationUnavailable", "ModelService", "NotReady", "ServiceState", "UploadTooLarge"]

CLASS_FOLDERS = {"cat": "cats", "dog": "dogs"}
INLINE_HASH_BYTES = 1 << 20  # uploads under 1 MiB are hashed on the event loop (well under a millisecond)


class ExplanationUnavailable(CatdogError):
    """The model version that made a prediction is no longer served, so its explanation cannot be computed (410)."""

    status_code = 410


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
        self.recorder = Recorder(settings, writer)
        self.control = ModelControl(
            settings,
            source,
            Path(model_dir) if model_dir is not None else Path(),
            on_production_change=self.recorder.clear_window,
            observe_batch=self.recorder.observe_batch,
        )
        self.cache = PredictionCache(settings.prediction_cache_size)
        self.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.in_flight = 0  # images admitted and not yet answered (only touched on the event loop)

    # --- what serves (catdog.web.model_control) -----------------------------------------------------
    @property
    def state(self) -> ServiceState:
        return self.control.state

    @property
    def ready(self) -> bool:
        return self.control.ready

    @property
    def predictor(self) -> Predictor | None:
        """The production predictor (None until the first model is loaded)."""
        return self.control.predictor

    @property
    def batcher(self) -> MicroBatcher[InferJob, Inferred] | None:
        """The production model's batcher (None until the first model is loaded)."""
        return self.control.batcher

    @property
    def model_dir(self) -> Path:
        """The production model's directory (before the first load: the one being loaded)."""
        return self.control.model_dir

    @property
    def source(self) -> ModelSource:
        return self.control.source

    @property
    def unloadable(self) -> dict[int, str]:
        """Registry versions that failed to load in this process -> why (a rollback must not land on one)."""
        return self.control.unloadable

    def served(self) -> dict[str, dict[str, Any] | None]:
        """What answers now, per alias (catdog.web.model_control.ModelControl.served)."""
        return self.control.served()

    def swap_failures(self) -> list[dict[str, Any]]:
        """Why a model the source names is not served here (catdog.web.model_control.ModelControl.swap_failures)."""
        return self.control.swap_failures()

    def load(self) -> None:
        """Load and warm production, then watch the source (blocking; run it in a thread)."""
        self.control.load()

    def poll(self) -> None:
        """Ask the source once and swap every alias whose model changed (blocking)."""
        self.control.poll()

    def close(self) -> None:
        """Stop watching, answer what is queued, then stop threads (the database writer is closed by its owner)."""
        self.control.close()
        self.decode_pool.shutdown(wait=True)
        self.recorder.close()

    # --- what is recorded (catdog.web.recording) -----------------------------------------------------
    @property
    def writer(self) -> PredictionWriter | None:
        return self.recorder.writer

    @property
    def explanations(self) -> ExplanationStore:
        return self.recorder.explanations

    @property
    def recent_count(self) -> int:
        return self.recorder.recent_count

    def recent_window(self) -> tuple[np.ndarray, np.ndarray]:
        """(P(dog) (n,), features (n, C)) of the last drift_window inferred production predictions."""
        return self.recorder.recent_window()

    # --- admission (on the event loop) ------------------------------------------------------------
    def admit(self, n: int) -> None:
        """Reserve room for n images, or refuse at once (NotReady / Overloaded)."""
        batcher = self.batcher
        if not self.ready or batcher is None:
            metrics.REJECTIONS.labels("not_ready").inc(n)
            raise NotReady(self.state.error or f"the model is {self.state.phase}")
        if self.in_flight + n > self.settings.max_queue_size:
            metrics.REJECTIONS.labels("queue_full").inc(n)
            raise Overloaded(batcher.retry_after(self.in_flight), self.in_flight)
        self.in_flight += n
        metrics.QUEUE_DEPTH.set(self.in_flight)

    def refusal(self) -> tuple[str, float] | None:
        """(detail, retry after s) when not even one more image fits (EarlyRefusal's test), else None."""
        batcher = self.batcher
        if not self.ready or batcher is None:
            return f"not ready: the model is {self.state.phase}", 5.0
        if self.in_flight >= self.settings.max_queue_size:
            metrics.REJECTIONS.labels("queue_full").inc()
            retry_after = batcher.retry_after(self.in_flight)
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
        slot = self.control.hold()
        try:
            if slot is None:
                return None
            loop = asyncio.get_running_loop()
            digest = await loop.run_in_executor(self.decode_pool, _sha256, data)
            cached = self.cache.get((digest, slot.predictor.version))
            if cached is not None:
                p_dog = float(cached.answer["probability"])
            else:
                image, gate = await loop.run_in_executor(self.decode_pool, slot.predictor.decode, data)
                inferred, _ = await slot.batcher.submit(InferJob(image, gate))
                p_dog = inferred.p_dog
            prediction = slot.predictor.prediction(None, p_dog, None)
            return ModelOpinion(prediction.predicted_class, prediction.probability)
        except (ImageDecodeError, Overloaded, BatcherStopped):
            return None
        finally:
            if slot is not None:
                self.control.let_go(slot)
            self.release(1)

    async def predict(
        self, data: bytes, *, filename: str | None, endpoint: str, request_id: str | None, explain: bool = False
    ) -> dict[str, Any]:
        """One admitted image -> the answer dict. Raises ImageDecodeError for unreadable bytes.

        The slot picked here answers the whole request, even when a swap replaces it meanwhile.
        """
        slot = self.control.pick()
        try:
            return await self._predict_on(slot, data, filename, endpoint, request_id, explain)
        finally:
            self.control.let_go(slot)

    async def _predict_on(
        self, slot: Slot, data: bytes, filename: str | None, endpoint: str, request_id: str | None, explain: bool
    ) -> dict[str, Any]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        if len(data) < INLINE_HASH_BYTES:
            digest = hashlib.sha256(data).hexdigest()
        else:  # hashing 20 MB takes ~40 ms: not on the event loop
            digest = await loop.run_in_executor(self.decode_pool, _sha256, data)
        key = (digest, slot.predictor.version)  # answers never cross model versions
        cached = self.cache.get(key)
        batch_size = None
        if cached is not None:
            metrics.CACHE.labels("hit").inc()
            answer = self._answer_from_cache(slot, cached, filename, started)
        else:
            metrics.CACHE.labels("miss").inc()
            answer, batch_size = await self._infer_answer(slot, data, filename, started, explain)
            self.cache.put(key, answer)
        if explain and "explanation" not in answer:
            answer["explanation"] = await self.explanation_data_url(answer["prediction_id"])
        self.recorder.record(answer, digest, endpoint, request_id, batch_size)
        return answer

    async def _infer_answer(
        self, slot: Slot, data: bytes, filename: str | None, started: float, explain: bool
    ) -> tuple[dict[str, Any], int]:
        """Decode, run through the slot's batcher, answer; (answer, images in the run)."""
        loop = asyncio.get_running_loop()
        image, gate = await loop.run_in_executor(self.decode_pool, slot.predictor.decode, data)
        inferred, stats = await slot.batcher.submit(InferJob(image, gate, explain))
        answer = self._answer(slot, inferred, filename, started)
        if self.control.is_production(slot):  # the drift window describes the production model
            self.recorder.note_production(inferred.p_dog, inferred.features)
        # the input is kept as it is (no encoding), on the recording thread, for /api/explain/{id} later
        self.recorder.keep_input(answer["prediction_id"], image, slot.predictor.version)
        if explain:
            png = await loop.run_in_executor(self.decode_pool, heat_map_png, slot.predictor, image, inferred)
            answer["explanation"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return answer, stats.size

    async def explanation_png(self, prediction_id: str) -> bytes | None:
        """The heat map over the photo for a recent prediction, or None when unknown or pruned.

        Computed now from the kept input by the model version that answered (one more pass
        through its batcher). Raises ExplanationUnavailable when that version is no longer served.
        """
        loop = asyncio.get_running_loop()
        kept = await loop.run_in_executor(self.decode_pool, self.explanations.load, prediction_id)
        if kept is None:
            return None
        if kept.cam is not None:  # kept by an older version, with its map
            return await loop.run_in_executor(self.decode_pool, overlay_png, kept.image, kept.cam)
        slot = self.control.hold(model_version=kept.model_version) if kept.model_version else None
        if slot is None:
            raise ExplanationUnavailable(
                f"model {kept.model_version}, which made this prediction, is no longer served: "
                "its explanation cannot be computed"
            )
        try:
            # an ImageNet-head gate batches its own inputs: give it one (both take 224 px) so a batch stays whole
            gate = kept.image if slot.predictor.gate is not None else None
            inferred, _ = await slot.batcher.submit(InferJob(kept.image, gate, explain=True))
            return await loop.run_in_executor(self.decode_pool, heat_map_png, slot.predictor, kept.image, inferred)
        finally:
            self.control.let_go(slot)

    async def explanation_data_url(self, prediction_id: str) -> str | None:
        png = await self.explanation_png(prediction_id)
        return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()

    # --- helpers ---------------------------------------------------------------------------------------
    def _answer(self, slot: Slot, inferred: Inferred, filename: str | None, started: float) -> dict[str, Any]:
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

    def _answer_from_cache(
        self, slot: Slot, cached: CachedAnswer, filename: str | None, started: float
    ) -> dict[str, Any]:
        prediction_id = uuid.uuid4().hex
        self.explanations.alias(prediction_id, cached.prediction_id)
        answer = {**cached.answer, "prediction_id": prediction_id, "filename": filename, "cached": True}
        answer["registry_version"] = slot.served.registry_version  # the same files may be a newer version
        answer["explanation_url"] = f"/api/explain/{prediction_id}"
        return self._stamp(answer, started)

    @staticmethod
    def _stamp(answer: dict[str, Any], started: float) -> dict[str, Any]:
        answer["prediction_time"] = round(time.perf_counter() - started, 6)
        answer["timestamp"] = iso_utc(timespec="milliseconds")
        return answer


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
