"""Predictions from a model directory with ONNX Runtime alone (no PyTorch, no training code).

Images are decoded in threads and run through the model graph in batches: model.onnx (fp32)
or model_int8.onnx, whichever catdog.ml.precision picks for this CPU. The pet gate says whether
the picture shows a cat or a dog at all: by default an out-of-distribution score of the served
backbone's own pooled features (catdog.ml.pet_ood, no second network); model directories whose
model_config.json names the older EfficientNet-Lite0 ImageNet head ("pet_gate": {"file":
"pet_gate.onnx"}) still run that graph.

Thread-safety: a Predictor is built once and never mutated; ONNX Runtime sessions may run from
several threads at once, so `decode` can run in many threads while one thread calls `infer`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from catdog.ml import gradcam
from catdog.ml.artifacts import (
    CONFIG_JSON,
    FEATURE_MAP,
    FEATURES,
    HEAD_NPZ,
    LAST_BLOCK_NPZ,
    MODEL_GRAPHS,
    P_DOG,
    ModelConfig,
    ModelDirError,
)
from catdog.ml.onnx_runtime import make_session
from catdog.ml.parallel import chunks, prefetched
from catdog.ml.pet_ood import METHOD as FEATURE_OOD
from catdog.ml.pet_ood import FeatureOODScorer
from catdog.ml.precision import (
    PRECISIONS,
    PrecisionUnavailable,
    cpu_description,
    measured_int8_speedup,
    resolve_precision,
)
from catdog.ml.preprocessing import LITE, ImageSource, Normalization, load_image

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class BatchOutputs:
    """What one run of the model graph gives for N images."""

    p_dog: np.ndarray  # (N,) float64, P(dog)
    features: np.ndarray  # (N, C) float32, pooled backbone features (what the head reads; drift monitoring)
    feature_map: np.ndarray | None  # (N, C, h, w) float32, the map the backbone pools (Grad-CAM); None unless asked
    pet_score: np.ndarray | None  # (N,) float64, the pet gate's score; None without a gate (or its images)


def model_version(model_dir: Path, backbone: str) -> str:
    """A short, stable identifier of the trained weights: "{backbone}-{8 hex}".

    The hex digits are the start of the SHA-256 over head.npz, model_config.json and, for
    fine-tuned models, last_block.npz (file names and contents): the same files give the same
    version on every machine and in either precision; rebuilding the graphs does not change it.
    """
    digest = hashlib.sha256()
    for name in (HEAD_NPZ, CONFIG_JSON, LAST_BLOCK_NPZ):
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return f"{backbone}-{digest.hexdigest()[:8]}"


class Predictor:
    """A model directory, ready to predict.

    precision: "auto" (int8 where the CPU has int8 dot products and model_int8.onnx exists, else
    fp32), "fp32" or "int8"; `self.precision` says which graph runs. Raises ModelDirError when
    the directory is not a model, has no graph, or lacks the graph of an explicit precision.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 0,
        batch_size: int = 16,
        precision: str = "auto",
        cache_dir: Path | None = None,
        spin: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.cache_dir = cache_dir  # where "auto" keeps its int8-vs-fp32 timing (None: timed once per process)
        self.config = ModelConfig.load(self.model_dir)
        self.precision = self._resolve_precision(precision, threads)
        self.model_path = self.model_dir / MODEL_GRAPHS[self.precision]
        self.session = make_session(self.model_path, threads, spin)
        self.output_names = frozenset(output.name for output in self.session.get_outputs())
        self.version = model_version(self.model_dir, self.config.backbone)
        self.normalization = Normalization.from_dict(self.config.normalization)
        self.batch_size = batch_size
        gate = self.config.pet_gate
        # the pet gate: the features' out-of-distribution score (no extra network), or, for model
        # directories that name it, the older ImageNet-head graph run on images of its own
        self.feature_gate: FeatureOODScorer | None = None
        self.gate = None
        if gate.get("method") == FEATURE_OOD:
            self.feature_gate = FeatureOODScorer.from_model_dir(self.model_dir, self.precision, gate)
        elif gate.get("file") and (self.model_dir / str(gate["file"])).is_file():
            self.gate = make_session(self.model_dir / str(gate["file"]), threads)
        self.gate_normalization = Normalization.from_dict(gate.get("normalization", LITE.to_dict()))
        self.gate_threshold = float(gate.get("threshold", 0.05))
        self.threshold = float(self.config.threshold)
        has_head = (self.model_dir / HEAD_NPZ).is_file()  # predicting needs only the graph; Grad-CAM needs it
        self.head = gradcam.NumpyHead.from_model_dir(self.model_dir, self.config) if has_head else None
        self._log_start(precision)

    def _resolve_precision(self, requested: str, threads: int) -> str:
        available = {p for p, name in MODEL_GRAPHS.items() if (self.model_dir / name).is_file()}
        if not available:
            missing = self.model_dir / MODEL_GRAPHS["fp32"]
            raise ModelDirError(f"{missing} is missing: build it with `catdog build {self.model_dir}`")
        if requested not in PRECISIONS:
            raise ModelDirError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")

        def int8_speedup() -> float:
            fp32, int8 = (self.model_dir / MODEL_GRAPHS[p] for p in ("fp32", "int8"))
            size = int(self.config.normalization.get("size", 224))
            return measured_int8_speedup(
                self.config.backbone, fp32, int8, size=size, threads=threads, cache_dir=self.cache_dir
            )

        try:
            return resolve_precision(requested, available, int8_speedup=int8_speedup)
        except PrecisionUnavailable:
            graph = self.model_dir / MODEL_GRAPHS[requested]
            raise ModelDirError(
                f"{graph} is missing: build it with `catdog build {self.model_dir}` "
                f"(int8 needs a calibration table: the backbone's packaged one or the directory's calibration.json)"
            ) from None

    def _log_start(self, requested: str) -> None:
        cpu = cpu_description()
        log.info(
            "model %s: %s graph %s (asked %s; CPU %s, int8 dot products %s)",
            self.version,
            self.precision,
            self.model_path.name,
            requested,
            cpu["model"],
            "yes" if cpu["int8_dot_product"] else "no",
        )
        if not self.can_explain:
            log.info("%s has no features/feature_map outputs: rebuild it with `catdog build`", self.model_path)

    @property
    def can_explain(self) -> bool:
        """Whether the graph outputs features and feature_map (graphs built before them do not)."""
        return {FEATURES, FEATURE_MAP} <= self.output_names

    @property
    def pet_gate(self) -> str | None:
        """Which pet gate answers is_pet: "features" (catdog.ml.pet_ood), "imagenet" (pet_gate.onnx) or None."""
        if self.feature_gate is not None and FEATURES in self.output_names:
            return "features"
        return "imagenet" if self.gate is not None else None

    # --- arrays in, numbers out -------------------------------------------------------
    def p_dog(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB at the model's input size -> P(dog) per image, float64 (N,)."""
        return np.asarray(self.session.run([P_DOG], {"image": self.normalization(images)})[0], np.float64)

    def pet_scores(self, images: np.ndarray) -> np.ndarray | None:
        """uint8 (N, G, G, 3) RGB at the ImageNet gate's input size -> P(cat or dog at all), float64 (N,).

        None when the model directory runs no ImageNet-head gate (the feature gate needs no images).
        """
        if self.gate is None:
            return None
        return np.asarray(self.gate.run(None, {"image": self.gate_normalization(images)})[0], np.float64)

    def infer(
        self, images: np.ndarray, gate_images: np.ndarray | None = None, *, feature_map: bool = False
    ) -> BatchOutputs:
        """One run of the model graph: P(dog), pooled features, the pet gate's score (and the feature map if asked).

        images: uint8 (N, S, S, 3) RGB at the model's input size (N >= 1), as `decode` returns
        them, stacked; gate_images: uint8 (N, G, G, 3) for an ImageNet-head gate, or None (the
        feature gate scores the features themselves). feature_map=True also returns the
        (N, C, h, w) map Grad-CAM needs (see `cams`).
        Raises ModelDirError when the graph predates the features/feature_map outputs
        (rebuild it with `catdog build`), ValueError on a wrong shape.
        """
        if not self.can_explain:
            raise ModelDirError(
                f"{self.model_path} was built without the features and feature_map outputs: "
                f"rebuild it with `catdog build {self.model_dir}`"
            )
        size = self.normalization.size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or len(images) == 0:
            raise ValueError(f"images must be uint8 (N, {size}, {size}, 3) with N >= 1, got {images.shape}")
        names = [P_DOG, FEATURES, FEATURE_MAP] if feature_map else [P_DOG, FEATURES]
        outputs = self.session.run(names, {"image": self.normalization(images)})
        features = np.asarray(outputs[1], np.float32)
        return BatchOutputs(
            p_dog=np.asarray(outputs[0], np.float64),
            features=features,
            feature_map=np.asarray(outputs[2], np.float32) if feature_map else None,
            pet_score=self._pet(features, gate_images),
        )

    def _pet(self, features: np.ndarray | None, gate_images: np.ndarray | None) -> np.ndarray | None:
        if self.feature_gate is not None and features is not None:
            return self.feature_gate(features)
        return None if gate_images is None else self.pet_scores(gate_images)

    def cams(self, outputs: BatchOutputs) -> np.ndarray:
        """Grad-CAM of each image's predicted class: float32 (N, h, w) in [0, 1] (catdog.ml.gradcam).

        outputs must come from `infer(..., feature_map=True)`. Raises ModelDirError when the
        model directory has no head.npz, ValueError without the feature map.
        """
        if outputs.feature_map is None:
            raise ValueError("Grad-CAM needs the feature map: infer(..., feature_map=True)")
        return self.cam_of(outputs.features, outputs.feature_map)

    def cam_of(self, features: np.ndarray, feature_map: np.ndarray) -> np.ndarray:
        """Grad-CAM from features (N, C) and feature_map (N, C, h, w) -> float32 (N, h, w) in [0, 1].

        Raises ModelDirError when the model directory has no head.npz.
        """
        if self.head is None:
            raise ModelDirError(f"{self.model_dir / HEAD_NPZ} is missing: Grad-CAM needs the trained head's weights")
        return gradcam.explain(self.head, features, feature_map, self.threshold)

    def explain(
        self, image: np.ndarray, gate_image: np.ndarray | None = None, name: str | None = None
    ) -> tuple[Prediction, np.ndarray]:
        """(prediction, Grad-CAM (h, w) float32 in [0, 1]) for one image as `decode` returns it.

        image: uint8 (S, S, 3); gate_image: uint8 (G, G, 3) for an ImageNet-head gate, or None.
        Raises as `infer`.
        """
        outputs = self.infer(image[None], None if gate_image is None else gate_image[None], feature_map=True)
        pet = None if outputs.pet_score is None else float(outputs.pet_score[0])
        return self.prediction(name, float(outputs.p_dog[0]), pet), self.cams(outputs)[0]

    # --- files or bytes in, predictions out ----------------------------------------------
    def decode(self, source: ImageSource) -> tuple[np.ndarray, np.ndarray | None]:
        """(model input uint8 (S, S, 3) RGB, ImageNet-gate input uint8 (G, G, 3) or None).

        The second is None unless the model directory runs the ImageNet-head gate.
        Pure and thread-safe. Raises ImageDecodeError for anything that is not a readable image.
        """
        return self._decode(source, self.gate is not None)

    def _decode(self, source: ImageSource, gate: bool) -> tuple[np.ndarray, np.ndarray | None]:
        model_size, gate_size = self.normalization.size, self.gate_normalization.size
        image = load_image(source, model_size)
        if not gate:
            return image, None
        return image, image if gate_size == model_size else load_image(source, gate_size)

    def _batches(self, sources: Sequence[ImageSource], gate: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(P(dog), pet scores or None) per batch; the session objects are never mutated (thread-safe)."""
        kind = self.pet_gate if gate else None
        for decoded in prefetched(
            chunks(list(sources), self.batch_size), lambda s: self._decode(s, kind == "imagenet")
        ):
            images = np.stack([image for image, _ in decoded])
            if kind == "features":
                p_dog, features = self.session.run([P_DOG, FEATURES], {"image": self.normalization(images)})
                yield np.asarray(p_dog, np.float64), self._pet(np.asarray(features, np.float32), None)
            elif kind == "imagenet":
                yield self.p_dog(images), self.pet_scores(np.stack([g for _, g in decoded if g is not None]))
            else:
                yield self.p_dog(images), None

    def predict(
        self, sources: Sequence[ImageSource], names: Sequence[str | None] | None = None, with_gate: bool = True
    ) -> list[Prediction]:
        """Raises ImageDecodeError on the first unreadable input, before anything is returned."""
        names = list(names) if names is not None else [str(s) if not isinstance(s, bytes) else None for s in sources]
        results: list[Prediction] = []
        for p_dog, pet in self._batches(sources, with_gate):
            for i, p in enumerate(p_dog):
                results.append(self.prediction(names[len(results)], float(p), None if pet is None else float(pet[i])))
        return results

    def probabilities(self, paths: Sequence[Path], progress: bool = False) -> np.ndarray:
        """P(dog) for many files, for evaluation; the pet gate is skipped."""
        out: list[np.ndarray] = []
        with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
            for p_dog, _ in self._batches(list(paths), gate=False):
                out.append(p_dog)
                bar.update(len(p_dog))
        return np.concatenate(out) if out else np.zeros(0)

    def prediction(self, name: str | None, p_dog: float, pet: float | None) -> Prediction:
        """The Prediction record for one image: class by the model's threshold, values rounded to 6 digits."""
        is_dog = p_dog >= self.threshold
        return Prediction(
            path=name,
            predicted_class=self.config.class_names[int(is_dog)],
            confidence=round(p_dog if is_dog else 1.0 - p_dog, 6),
            probability=round(p_dog, 6),
            is_pet=None if pet is None else bool(pet >= self.gate_threshold),
            pet_score=None if pet is None else round(pet, 6),
        )
