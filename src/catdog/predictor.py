"""Predictions from a model directory with ONNX Runtime alone (no PyTorch, no training code).

Images are decoded in threads and run through model.onnx in batches; the pet gate (the
EfficientNet-Lite0 ImageNet head) says whether the picture shows a cat or a dog at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from catdog.artifacts import MODEL_ONNX, ModelConfig, ModelDirError
from catdog.onnx_runtime import make_session
from catdog.parallel import chunks, prefetched
from catdog.preprocessing import LITE, ImageSource, Normalization, load_image


@dataclass(frozen=True)
class Prediction:
    path: str | None
    predicted_class: str
    confidence: float  # probability of the predicted class
    probability: float  # P(dog)
    is_pet: bool | None  # None when the model directory has no pet gate
    pet_score: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Predictor:
    def __init__(self, model_dir: Path, *, threads: int = 0, batch_size: int = 16) -> None:
        self.model_dir = Path(model_dir)
        self.config = ModelConfig.load(self.model_dir)
        model_path = self.model_dir / MODEL_ONNX
        if not model_path.is_file():
            raise ModelDirError(f"{model_path} is missing: build it with `catdog build {self.model_dir}`")
        self.session = make_session(model_path, threads)
        self.normalization = Normalization.from_dict(self.config.normalization)
        self.batch_size = batch_size
        gate_path = self.model_dir / str(self.config.pet_gate.get("file", ""))
        self.gate = make_session(gate_path, threads) if gate_path.is_file() else None
        self.gate_normalization = Normalization.from_dict(self.config.pet_gate.get("normalization", LITE.to_dict()))
        self.gate_threshold = float(self.config.pet_gate.get("threshold", 0.05))
        self.threshold = float(self.config.threshold)

    # --- arrays in, numbers out -------------------------------------------------------
    def p_dog(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB at the model's input size -> P(dog) per image."""
        return np.asarray(self.session.run(None, {"image": self.normalization(images)})[0], np.float64)

    def pet_scores(self, images: np.ndarray) -> np.ndarray | None:
        if self.gate is None:
            return None
        return np.asarray(self.gate.run(None, {"image": self.gate_normalization(images)})[0], np.float64)

    # --- files or bytes in, predictions out ----------------------------------------------
    def _decode(self, source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        model_size, gate_size = self.normalization.size, self.gate_normalization.size
        image = load_image(source, model_size)
        gate_image = image if gate_size == model_size or self.gate is None else load_image(source, gate_size)
        return image, gate_image

    def _batches(self, sources: Sequence[ImageSource]) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for decoded in prefetched(chunks(list(sources), self.batch_size), self._decode):
            images = np.stack([image for image, _ in decoded])
            yield self.p_dog(images), self.pet_scores(np.stack([gate for _, gate in decoded]))

    def predict(
        self, sources: Sequence[ImageSource], names: Sequence[str | None] | None = None, with_gate: bool = True
    ) -> list[Prediction]:
        """Raises ImageDecodeError on the first unreadable input (callers validate first if needed)."""
        names = list(names) if names is not None else [str(s) if not isinstance(s, bytes) else None for s in sources]
        results: list[Prediction] = []
        for p_dog, pet in self._batches(sources):
            for i, p in enumerate(p_dog):
                results.append(
                    self._prediction(
                        names[len(results)], float(p), None if pet is None or not with_gate else float(pet[i])
                    )
                )
        return results

    def probabilities(self, paths: Sequence[Path], progress: bool = False) -> np.ndarray:
        """P(dog) for many files, for evaluation; the pet gate is skipped."""
        gate, self.gate = self.gate, None
        try:
            out: list[np.ndarray] = []
            with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
                for p_dog, _ in self._batches(list(paths)):
                    out.append(p_dog)
                    bar.update(len(p_dog))
            return np.concatenate(out) if out else np.zeros(0)
        finally:
            self.gate = gate

    def _prediction(self, name: str | None, p_dog: float, pet: float | None) -> Prediction:
        is_dog = p_dog >= self.threshold
        return Prediction(
            path=name,
            predicted_class=self.config.class_names[int(is_dog)],
            confidence=round(p_dog if is_dog else 1.0 - p_dog, 6),
            probability=round(p_dog, 6),
            is_pet=None if pet is None else bool(pet >= self.gate_threshold),
            pet_score=None if pet is None else round(pet, 6),
        )
