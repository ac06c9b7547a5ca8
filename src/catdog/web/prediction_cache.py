"""Answers by (image content, model version): a repeated photo is answered without running the model."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

PER_REQUEST = frozenset({"explanation", "prediction_time", "timestamp"})  # never cached


@dataclass
class CachedAnswer:
    answer: dict[str, Any]  # the answer without its per-request fields
    prediction_id: str  # the original, whose kept input a cached answer shares


class PredictionCache:
    """An LRU of answers keyed by (sha256 hex of the bytes, model content id); thread-safe.

    size 0 turns it off (get gives None, put keeps nothing). Answers never cross model versions.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: LRUCache[tuple[str, str], CachedAnswer] = LRUCache(maxsize=max(1, size))
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> CachedAnswer | None:
        if self.size == 0:
            return None
        with self._lock:
            return self._entries.get(key)

    def put(self, key: tuple[str, str], answer: dict[str, Any]) -> None:
        if self.size == 0:
            return
        keep = {k: v for k, v in answer.items() if k not in PER_REQUEST}
        with self._lock:
            self._entries[key] = CachedAnswer(keep, answer["prediction_id"])

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
