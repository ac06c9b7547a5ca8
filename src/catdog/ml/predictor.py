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

from catdog.ml.artifacts import MODEL_ONNX, ModelConfig, ModelDirError
from catdog.ml.onnx_runtime import make_session
from catdog.ml.parallel import chunks, prefetched
from catdog.ml.preprocessing import LITE, ImageSource, Normalization, load_image


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
    def _decode(self, source: ImageSource, gate: bool) -> tuple[np.ndarray, np.ndarray | None]:
        model_size, gate_size = self.normalization.size, self.gate_normalization.size
        image = load_image(source, model_size)
        if not gate:
            return image, None
        return image, image if gate_size == model_size else load_image(source, gate_size)

    def _batches(self, sources: Sequence[ImageSource], gate: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(P(dog), pet scores or None) per batch; the session objects are never mutated (thread-safe)."""
        gate = gate and self.gate is not None
        for decoded in prefetched(chunks(list(sources), self.batch_size), lambda s: self._decode(s, gate)):
            p_dog = self.p_dog(np.stack([image for image, _ in decoded]))
            pet = self.pet_scores(np.stack([g for _, g in decoded if g is not None])) if gate else None
            yield p_dog, pet

    def predict(
        self, sources: Sequence[ImageSource], names: Sequence[str | None] | None = None, with_gate: bool = True
    ) -> list[Prediction]:
        """Raises ImageDecodeError on the first unreadable input, before anything is returned."""
        names = list(names) if names is not None else [str(s) if not isinstance(s, bytes) else None for s in sources]
        results: list[Prediction] = []
        for p_dog, pet in self._batches(sources, with_gate):
            for i, p in enumerate(p_dog):
                results.append(self._prediction(names[len(results)], float(p), None if pet is None else float(pet[i])))
        return results

    def probabilities(self, paths: Sequence[Path], progress: bool = False) -> np.ndarray:
        """P(dog) for many files, for evaluation; the pet gate is skipped."""
        out: list[np.ndarray] = []
        with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
            for p_dog, _ in self._batches(list(paths), gate=False):
                out.append(p_dog)
                bar.update(len(p_dog))
        return np.concatenate(out) if out else np.zeros(0)

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
