"""Recent predictions' Grad-CAM inputs on disk, so any worker process can draw a heat map later.

Each inferred prediction leaves `<id>.npz` (the 224 px model input as JPEG bytes and the
class-activation map); a cached answer links its new id to the original file. The folder
keeps the newest `kept` entries. Ids are 32 hex digits, checked before they touch a path.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

_ID = re.compile(r"^[0-9a-f]{32}$")


def is_prediction_id(text: str) -> bool:
    return bool(_ID.match(text))


class ExplanationStore:
    """prediction id -> (image uint8 (S,S,3), cam float32 (h,w) in [0,1]), bounded by count."""

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

    def save(self, prediction_id: str, image: np.ndarray, cam: np.ndarray) -> None:
        """Write atomically (a reader never sees half a file); prune now and then."""
        if self.kept == 0:
            return
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=90)
        path = self._path(prediction_id)
        part = path.with_name(path.name + ".part")
        with open(part, "wb") as handle:
            np.savez(handle, jpeg=np.frombuffer(buffer.getvalue(), np.uint8), cam=cam.astype(np.float32))
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

    def load(self, prediction_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(image, cam) or None when unknown or pruned."""
        try:
            with np.load(self._path(prediction_id)) as data:
                jpeg, cam = data["jpeg"].tobytes(), data["cam"]
        except (OSError, KeyError, ValueError):
            return None
        with Image.open(io.BytesIO(jpeg)) as image:
            return np.asarray(image.convert("RGB")), cam

    def input_jpeg(self, prediction_id: str) -> bytes | None:
        """The model's input for a prediction as kept (a JPEG, model input size), or None when gone."""
        try:
            with np.load(self._path(prediction_id)) as data:
                return bytes(data["jpeg"].tobytes())
        except (OSError, KeyError, ValueError):
            return None

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
