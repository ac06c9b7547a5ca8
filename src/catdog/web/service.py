"""The served model: admission, prediction cache, decoding off the event loop, batching, recording.

One `ModelService` per worker process. A request's image goes: admission (503 past the queue
bound) -> content hash -> prediction cache -> decode (thread pool) -> MicroBatcher (one ONNX
Runtime run for many requests, P(dog), pooled features and the Grad-CAM map at once) ->
answer; recording (database, metrics, drift window, explanation file) never delays the answer
by more than a queue put.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
import uuid
from collections import deque
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
from catdog.settings import Settings
from catdog.web import metrics
from catdog.web.batching import BatchStats, MicroBatcher, Overloaded
from catdog.web.explanations import ExplanationStore

log = logging.getLogger(__name__)

CLASS_FOLDERS = {"cat": "cats", "dog": "dogs"}
INLINE_HASH_BYTES = 1 << 20  # uploads under 1 MiB are hashed on the event loop (well under a millisecond)


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
class ServiceState:
    phase: str = "starting"  # starting, loading, warming, ready, failed
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None


class ModelService:
    """Serve one model directory; thread-safe where it meets the event loop and the batch thread."""

    def __init__(self, settings: Settings, model_dir: Path, writer: PredictionWriter | None = None) -> None:
        self.settings = settings
        self.model_dir = Path(model_dir)
        self.writer = writer
        self.state = ServiceState()
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher[_Job, _Inferred] | None = None
        self.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.side_pool = ThreadPoolExecutor(1, thread_name_prefix="record")  # explanation files
        self.cache: LRUCache[tuple[str, str], _Cached] = LRUCache(maxsize=max(1, settings.prediction_cache_size))
        self._cache_lock = threading.Lock()
        self.explanations = ExplanationStore(settings.state_dir / "explanations", settings.explanations_kept)
        self.in_flight = 0  # images admitted and not yet answered (only touched on the event loop)
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=settings.drift_window)  # (P(dog), features)
        self.recent_count = 0  # inferred predictions so far: tells the drift monitor whether the window moved

    # --- life cycle ------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model, warm every batch size, start the batcher (blocking; run in a thread)."""
        try:
            self.state.phase = "loading"
            predictor = Predictor(self.model_dir, threads=self.settings.threads, precision=self.settings.precision)
            self.predictor = predictor
            self.state.phase = "warming"
            self._warm_up(predictor)
            self.batcher = MicroBatcher(
                self._run_batch,
                max_batch_size=self.settings.max_batch_size,
                max_batch_wait_s=self.settings.max_batch_wait_ms / 1000,
                max_queue_size=self.settings.max_queue_size,
                on_batch=_observe_batch,
                name="batcher",
            )
            self.batcher.start()
            metrics.MODEL_INFO.labels(predictor.version, predictor.config.backbone, predictor.precision).set(1)
            self.state.ready_at = time.time()
            self.state.phase = "ready"
            log.info(
                "ready on http://%s:%d (model %s, %s)",
                self.settings.host,
                self.settings.port,
                predictor.version,
                predictor.precision,
                extra={
                    "model_version": predictor.version,
                    "precision": predictor.precision,
                    "model_dir": str(self.model_dir),
                },
            )
        except Exception as exc:
            self.state.phase, self.state.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")

    def _warm_up(self, predictor: Predictor) -> None:
        """One run per batch size, so no request pays a first-run allocation (Triton's model warmup)."""
        size = predictor.normalization.size
        gate = predictor.gate is not None
        for n in self.settings.warmup_sizes():
            images = np.full((n, size, size, 3), 127, np.uint8)
            started = time.perf_counter()
            predictor.infer(images, images if gate else None)
            log.info("warmed batch size %d in %.2f s", n, time.perf_counter() - started)

    def close(self) -> None:
        """Answer what is queued, then stop threads (the database writer is closed by its owner)."""
        if self.batcher is not None:
            self.batcher.stop()
        self.decode_pool.shutdown(wait=True)
        self.side_pool.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        return self.state.phase == "ready"

    # --- the batch thread -------------------------------------------------------------------------
    def _run_batch(self, jobs: list[_Job]) -> list[_Inferred]:
        assert self.predictor is not None
        images = np.stack([job.image for job in jobs])
        gates = [job.gate for job in jobs]
        gate_images = np.stack(gates) if all(g is not None for g in gates) else None  # type: ignore[arg-type]
        out = self.predictor.infer(images, gate_images)
        cams = self.predictor.cams(out)  # Grad-CAM of each image's predicted class
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

    async def predict(
        self, data: bytes, *, filename: str | None, endpoint: str, request_id: str | None, explain: bool = False
    ) -> dict[str, Any]:
        """One admitted image -> the answer dict. Raises ImageDecodeError for unreadable bytes."""
        assert self.predictor is not None and self.batcher is not None
        started = time.perf_counter()
        version = self.predictor.version
        loop = asyncio.get_running_loop()
        if len(data) < INLINE_HASH_BYTES:
            digest = hashlib.sha256(data).hexdigest()
        else:  # hashing 20 MB takes ~40 ms: not on the event loop
            digest = await loop.run_in_executor(self.decode_pool, _sha256, data)
        cached = self._cache_get((digest, version))
        if cached is not None:
            metrics.CACHE.labels("hit").inc()
            answer = self._answer_from_cache(cached, filename, started)
            batch_size = None
        else:
            metrics.CACHE.labels("miss").inc()
            image, gate = await loop.run_in_executor(self.decode_pool, self.predictor.decode, data)
            inferred, stats = await self.batcher.submit(_Job(image, gate))
            answer = self._answer(inferred, filename, started)
            self._cache_put((digest, version), answer)
            self.recent.append((inferred.p_dog, inferred.features))
            self.recent_count += 1
            self.side_pool.submit(self.explanations.save, answer["prediction_id"], image, inferred.cam)
            batch_size = stats.size
            if explain:
                png = await loop.run_in_executor(self.decode_pool, overlay_png, image, inferred.cam)
                answer["explanation"] = "data:image/png;base64," + base64.b64encode(png).decode()
        if explain and "explanation" not in answer:
            answer["explanation"] = await self.explanation_data_url(answer["prediction_id"])
        self._record(answer, digest, endpoint, request_id, batch_size)
        return answer

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
    def _answer(self, inferred: _Inferred, filename: str | None, started: float) -> dict[str, Any]:
        assert self.predictor is not None
        prediction = self.predictor.prediction(filename, inferred.p_dog, inferred.pet_score)
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
            "model_version": self.predictor.version,
            "precision": self.predictor.precision,
            "cached": False,
            "explanation_url": f"/api/explain/{prediction_id}",
        }
        return self._stamp(answer, started)

    def _answer_from_cache(self, cached: _Cached, filename: str | None, started: float) -> dict[str, Any]:
        prediction_id = uuid.uuid4().hex
        self.explanations.alias(prediction_id, cached.prediction_id)
        answer = {**cached.answer, "prediction_id": prediction_id, "filename": filename, "cached": True}
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _observe_batch(stats: BatchStats) -> None:
    metrics.BATCH_SIZE.observe(stats.size)
    metrics.INFERENCE_SECONDS.observe(stats.seconds)
