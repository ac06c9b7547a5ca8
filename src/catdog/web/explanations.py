"""Recent predictions' model inputs on disk, so any worker process can explain one later.

Each inferred prediction leaves `<id>.npz`: the model input as it was (uint8 (S, S, 3), stored
raw: no image encoding on the serving path) and the model version that answered. A Grad-CAM
heat map is computed from it only when someone asks (`/api/explain/{id}`: one more pass of the
model), never for every prediction. A cached answer links its new id to the original file. The
folder keeps the newest `kept` entries. Ids are 32 hex digits, checked before they touch a path.
Files written by older versions (the input as JPEG bytes plus the map) are still read.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

_ID = re.compile(r"^[0-9a-f]{32}$")


def is_prediction_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass(frozen=True)
class KeptInput:
    """What is kept of one prediction: the model input, and the map when an older version stored one."""

    image: np.ndarray  # uint8 (S, S, 3) RGB, the model's input
    model_version: str | None  # the content id of the model that answered (None in older files)
    cam: np.ndarray | None = None  # float32 (h, w) in [0, 1], only in files older versions wrote


class ExplanationStore:
    """prediction id -> the model input (and the model version), bounded by count."""

    def __init__(self, folder: Path, kept: int) -> None:
        self.folder = Path(folder)
        self.kept = kept
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._writes = 0

    def _path(self, prediction_id: str) -> Path:
        if not is_prediction_id(prediction_id):
            raise ValueError("not a prediction id")
        return self.folder / f"{prediction_id}.npz"

    def save(self, prediction_id: str, image: np.ndarray, model_version: str) -> None:
        """Keep the model input uint8 (S, S, 3) as it is (no encoding); atomic; prune now and then."""
        if self.kept == 0:
            return
        path = self._path(prediction_id)
        part = path.with_name(path.name + ".part")
        with open(part, "wb") as handle:
            np.savez(handle, image=np.ascontiguousarray(image, np.uint8), model_version=np.array(model_version))
        part.replace(path)
        self._maybe_prune()

    def alias(self, new_id: str, original_id: str) -> None:
        """Let a cached answer's id show the original's explanation (a hard link; no copy)."""
        if self.kept == 0:
            return
        try:
            os.link(self._path(original_id), self._path(new_id))
        except OSError:
            log.debug("explanation %s is gone; %s has none", original_id, new_id)

    def load(self, prediction_id: str) -> KeptInput | None:
        """The kept input of a prediction, or None when unknown, pruned or unreadable."""
        try:
            with np.load(self._path(prediction_id), allow_pickle=False) as data:
                if "image" in data.files:
                    version = str(data["model_version"]) if "model_version" in data.files else None
                    return KeptInput(np.asarray(data["image"], np.uint8), version)
                jpeg, cam = data["jpeg"].tobytes(), np.asarray(data["cam"], np.float32)
        except (OSError, KeyError, ValueError):
            return None
        with Image.open(io.BytesIO(jpeg)) as image:
            return KeptInput(np.asarray(image.convert("RGB")), None, cam)

    def input_jpeg(self, prediction_id: str) -> bytes | None:
        """The model's input for a prediction as a JPEG (quality 90, model input size), or None when gone."""
        kept = self.load(prediction_id)
        if kept is None:
            return None
        buffer = io.BytesIO()
        Image.fromarray(kept.image).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    def _maybe_prune(self) -> None:
        with self._lock:
            self._writes += 1
            if self._writes % 100:
                return
        files = sorted(self.folder.glob("*.npz"), key=_mtime)
        for path in files[: max(0, len(files) - self.kept)]:
            path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
