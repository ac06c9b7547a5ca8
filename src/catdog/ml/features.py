"""Backbone features, computed once per (image content, backbone graph, augmentation view).

The backbone is frozen, so training only ever needs its pooled output. Features live in a
SQLite file per extractor (backbone graph + augmentation recipe), keyed by the image's sha256
and view number: a re-run, or a retrain after new uploads, pays backbone passes only for
images it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from catdog.ml.data import Sample
from catdog.ml.onnx_runtime import make_session
from catdog.ml.parallel import chunks, prefetched
from catdog.ml.preprocessing import Normalization, augment, load_image


@dataclass(frozen=True)
class AugmentRecipe:
    rotation: float = 20.0
    zoom: float = 0.15
    shift: float = 0.1
    flip: bool = True
    seed: int = 0

    def view(self, image: np.ndarray, sha256: str, view: int) -> np.ndarray:
        """View 0 is the plain image; view k > 0 a random view fixed by (seed, content, k)."""
        if view == 0:
            return image
        rng = np.random.default_rng([self.seed, view, int(sha256[:15], 16)])
        return augment(image, rng, rotation=self.rotation, zoom=self.zoom, shift=self.shift, flip=self.flip)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class FeatureExtractor:
    """uint8 NHWC RGB images -> pooled backbone features (N, C) through an ONNX graph."""

    def __init__(self, onnx_path: Path, normalization: Normalization, threads: int = 0, spin: bool = True) -> None:
        self.session = make_session(onnx_path, threads, spin)
        self.normalization = normalization
        self.graph_digest = graph_digest(onnx_path)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {"image": self.normalization(images)})[0], np.float32)


class FeatureCache:
    """sha256:view -> vector (stored as `dtype`, returned as float32), one SQLite file per extractor."""

    def __init__(self, path: Path, dtype: type[np.floating] = np.float32) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.dtype = dtype
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, blob in self.db.execute(f"SELECT key, vector FROM features WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=self.dtype).astype(np.float32)
        return found

    def has(self, keys: Sequence[str]) -> set[str]:
        """The keys among `keys` that hold a vector (reads keys only, not the vectors)."""
        present: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            present.update(key for (key,) in self.db.execute(f"SELECT key FROM features WHERE key IN ({marks})", chunk))
        return present

    def put(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO features VALUES (?, ?)",
                ((key, np.asarray(v, self.dtype).tobytes()) for key, v in items),
            )

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM features").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def graph_digest(onnx_path: Path) -> str:
    """The first 16 hex digits of the graph file's sha256: what names its feature cache."""
    with open(onnx_path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def cache_path(features_dir: Path, backbone: str, graph: Path) -> Path:
    """The feature cache file of a backbone graph (read without loading the graph)."""
    return features_dir / f"{backbone}-{graph_digest(graph)}.sqlite"


def cache_for(
    features_dir: Path, backbone: str, extractor: FeatureExtractor, dtype: type[np.floating] = np.float32
) -> FeatureCache:
    return FeatureCache(features_dir / f"{backbone}-{extractor.graph_digest}.sqlite", dtype)


def cache_keys(samples: Sequence[Sample], views: int, recipe: AugmentRecipe) -> list[str]:
    """The cache keys extract_features reads for these samples, views and recipe (sample-major)."""
    return [_key(s, v, recipe) for s in samples for v in range(views)]


def _key(sample: Sample, view: int, recipe: AugmentRecipe) -> str:
    """Plain views are shared by every recipe; augmented ones belong to theirs."""
    return f"{sample.sha256}:0" if view == 0 else f"{sample.sha256}:{view}:{recipe.digest()}"


def _load_views(sample: Sample, views: Sequence[int], size: int, recipe: AugmentRecipe) -> list[tuple[str, np.ndarray]]:
    image = load_image(sample.path, size)
    return [(_key(sample, v, recipe), recipe.view(image, sample.sha256, v)) for v in views]


def extract_features(
    samples: Sequence[Sample],
    extractor: FeatureExtractor,
    cache: FeatureCache,
    *,
    views: int = 1,
    recipe: AugmentRecipe | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "features",
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(len(samples), views, D) flat features; only the missing (image, view) pairs run the graph.

    on_batch(done, total): called before the first batch and after each, counting backbone passes
    still to run at the start (0, 0 when everything was cached); what it raises stops extraction
    there, with every finished batch already in the cache.
    """
    recipe = recipe or AugmentRecipe()
    size = extractor.normalization.size
    keys = [_key(s, v, recipe) for s in samples for v in range(views)]
    found = cache.get(keys)
    todo = [(s, [v for v in range(views) if _key(s, v, recipe) not in found]) for s in samples]
    todo = [(s, vs) for s, vs in todo if vs]
    per_batch = max(1, batch_size // max(1, views))
    loaded_batches = prefetched(chunks(todo, per_batch), lambda item: _load_views(item[0], item[1], size, recipe))
    total = sum(len(vs) for _, vs in todo)
    done = 0
    if on_batch is not None:
        on_batch(0, total)
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for loaded in loaded_batches:
            pairs = [pair for views_of_one in loaded for pair in views_of_one]
            vectors = extractor(np.stack([image for _, image in pairs])).reshape(len(pairs), -1)
            computed = list(zip((key for key, _ in pairs), vectors, strict=False))
            cache.put(computed)
            found.update(computed)
            bar.update(len(pairs))
            done += len(pairs)
            if on_batch is not None:
                on_batch(done, total)
    return np.stack([np.stack([found[_key(s, v, recipe)] for v in range(views)]) for s in samples])


def pooled_features(
    backbone: str,
    graph: Path,
    normalization: Normalization,
    samples: Sequence[Sample],
    *,
    features_dir: Path,
    threads: int,
    progress: bool = False,
    desc: str = "features",
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, str]:
    """((N, C) float32 pooled features of the samples' plain view, the graph's sha256[:16]), through the cache.

    features_dir: the feature cache folder (settings.features_dir); threads: ONNX Runtime intra-op
    threads, 0 for every core (settings.threads).
    """
    extractor = FeatureExtractor(graph, normalization, threads)
    cache = cache_for(features_dir, backbone, extractor)
    try:
        features = extract_features(samples, extractor, cache, views=1, progress=progress, desc=desc, on_batch=on_batch)
    finally:
        cache.close()
    return features[:, 0], extractor.graph_digest
