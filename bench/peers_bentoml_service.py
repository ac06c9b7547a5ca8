"""The BentoML side of bench/peers.py: catdog's model directory and graph, served by BentoML's adaptive batching.

Runs in a virtual environment of its own (bentoml, onnxruntime, numpy, pillow, pillow_heif, tqdm;
no catdog install, no torch), started by bench/peers.py as

    PEERS_MODEL_DIR=models/vgg16 PEERS_PRECISION=int8 ... \\
        PEERS_VENV/bin/bentoml serve peers_bentoml_service:PeerService --working-dir bench --port P

Same work per image as catdog's POST /api/predict, by the same code: catdog's
`catdog.ml.predictor.Predictor` (built with the precision bench/peers.py found catdog picks, and
catdog's intra-op thread count) decodes each upload (`Predictor.decode`: catdog.ml.preprocessing's
draft-mode decode, EXIF orientation, squash-resize) and runs each batch (`Predictor.infer`: the
normalization of model_config.json, the model graph, the pet gate), as catdog's batch thread does.
Predictor imports only NumPy, Pillow, pillow_heif, onnxruntime and tqdm, so this file puts
catdog's src/ on sys.path instead of copying it: the two sides cannot drift apart. What catdog's
server does on top (the prediction cache, the database record, the drift window, kept inputs for
explanations) is not done here.

One worker and one batch at a time (`threads=1`, as catdog's one batch thread); the batch's files
are decoded in PEERS_DECODE_THREADS threads (catdog's CATDOG_DECODE_THREADS). The API takes a
multipart `file` like catdog's /api/predict and answers `[{"p_dog": float, "pet_score": float |
null}]` (a batchable BentoML API takes and gives a list per request).

Settings (environment, read at import: BentoML's decorators take them then): PEERS_MODEL_DIR,
PEERS_PRECISION (fp32 or int8), PEERS_GRAPH (the .onnx file bench/peers.py expects; checked),
PEERS_THREADS (ONNX Runtime intra-op threads, 0 = its default: every core), PEERS_DECODE_THREADS,
PEERS_MAX_BATCH (16), PEERS_MAX_LATENCY_MS, PEERS_TIMEOUT_S.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # catdog's decode and inference code
from catdog.ml.predictor import Predictor

MODEL_DIR = Path(os.environ.get("PEERS_MODEL_DIR", "models/vgg16"))
PRECISION = os.environ.get("PEERS_PRECISION", "fp32")
GRAPH = os.environ.get("PEERS_GRAPH", "")
THREADS = int(os.environ.get("PEERS_THREADS", "0"))
DECODE_THREADS = int(os.environ.get("PEERS_DECODE_THREADS", "2"))
MAX_BATCH = int(os.environ.get("PEERS_MAX_BATCH", "16"))
MAX_LATENCY_MS = int(os.environ.get("PEERS_MAX_LATENCY_MS", "60000"))
TIMEOUT_S = int(os.environ.get("PEERS_TIMEOUT_S", "300"))


@bentoml.service(workers=1, threads=1, traffic={"timeout": TIMEOUT_S})
class PeerService:
    """P(dog) and the pet score of uploaded images, batched by BentoML."""

    def __init__(self) -> None:
        self.predictor = Predictor(MODEL_DIR, threads=THREADS, precision=PRECISION)
        if GRAPH and self.predictor.model_path.resolve() != Path(GRAPH).resolve():
            raise RuntimeError(f"serving {self.predictor.model_path}, not {GRAPH}")
        self.decode_pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        size, gate_size = self.predictor.normalization.size, self.predictor.gate_normalization.size
        for n in range(1, MAX_BATCH + 1):  # as catdog's CATDOG_WARMUP_BATCH_SIZES=all: no first-run allocations
            images = np.full((n, size, size, 3), 127, np.uint8)
            gates = np.full((n, gate_size, gate_size, 3), 127, np.uint8) if self.predictor.gate is not None else None
            self.predictor.infer(images, gates)

    def _decode(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        return self.predictor.decode(path.read_bytes())  # bytes, as catdog's server decodes an upload

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, file: list[Path]) -> list[dict[str, Any]]:
        """One multipart `file` per request; BentoML joins the requests' lists into one batch."""
        decoded = list(self.decode_pool.map(self._decode, file))
        images = np.stack([image for image, _ in decoded])
        gates = [gate for _, gate in decoded]
        gate_images = np.stack(gates) if all(g is not None for g in gates) else None  # type: ignore[arg-type]
        out = self.predictor.infer(images, gate_images)
        pet = [None] * len(file) if out.pet_score is None else [float(p) for p in out.pet_score]
        return [{"p_dog": float(p), "pet_score": pet[i]} for i, p in enumerate(out.p_dog)]
