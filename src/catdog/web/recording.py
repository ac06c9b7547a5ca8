"""Recording what was answered, off the batch thread: metrics, database rows, the drift window, kept inputs.

Nothing here may delay an answer by more than a queue put: database rows go to the
PredictionWriter's queue, batch metrics and kept inputs (for `/api/explain/{id}`) to one
recording thread, and the drift window is a bounded deque touched on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from catdog.db.writer import PredictionRecord, PredictionWriter
from catdog.settings import Settings
from catdog.web import metrics
from catdog.web.batching import BatchStats
from catdog.web.explanations import ExplanationStore

log = logging.getLogger(__name__)


class Recorder:
    """Everything a worker keeps about its answers.

    Args:
        settings: state_dir (kept inputs under explanations/), explanations_kept, drift_window.
        writer: where prediction rows go (None: not recorded).
    """

    def __init__(self, settings: Settings, writer: PredictionWriter | None) -> None:
        self.writer = writer
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="record")
        self.explanations = ExplanationStore(settings.state_dir / "explanations", settings.explanations_kept)
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=settings.drift_window)  # (P(dog), features)
        self.recent_count = 0  # inferred predictions so far: tells the drift monitor whether the window moved

    def observe_batch(self, stats: BatchStats) -> None:
        """Batch size and run time into the metrics, on the recording thread (called on the batch thread)."""
        with contextlib.suppress(RuntimeError):  # the pool is shut down (closing): the figure is dropped
            self.pool.submit(_observe_batch, stats)

    def keep_input(self, prediction_id: str, image: np.ndarray, model_version: str) -> None:
        """Keep the model input uint8 (S, S, 3) for a later explanation, on the recording thread."""
        self.pool.submit(self.explanations.save, prediction_id, image, model_version)

    def note_production(self, p_dog: float, features: np.ndarray) -> None:
        """One production prediction's P(dog) and features (C,) into the drift window."""
        self.recent.append((p_dog, features))
        self.recent_count += 1

    def clear_window(self) -> None:
        """Forget the drift window (production was replaced: the window describes one model)."""
        self.recent.clear()

    def recent_window(self) -> tuple[np.ndarray, np.ndarray]:
        """(P(dog) (n,), features (n, C)) of the last drift_window inferred predictions."""
        items = list(self.recent)
        if not items:
            return np.zeros(0), np.zeros((0, 0), np.float32)
        return np.array([p for p, _ in items]), np.stack([f for _, f in items])

    def record(
        self, answer: dict[str, Any], digest: str, endpoint: str, request_id: str | None, batch_size: int | None
    ) -> None:
        """Count the answer and queue its database row (never raises: a row the database would refuse is logged)."""
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

    def close(self) -> None:
        """Finish the queued recording work (the database writer is closed by its owner)."""
        self.pool.shutdown(wait=True)


def _observe_batch(stats: BatchStats) -> None:
    metrics.BATCH_SIZE.observe(stats.size)
    metrics.INFERENCE_SECONDS.observe(stats.seconds)
