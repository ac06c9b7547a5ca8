from __future__ import annotations

from pathlib import Path

import numpy as np

from catdog.ml.backbones import create_backbone
from catdog.ml.data import load_split
from catdog.ml.features import AugmentRecipe, FeatureCache, FeatureExtractor, cache_for, extract_features
from catdog.settings import get_settings

from ..conftest import CATSDOGS


class CountingExtractor(FeatureExtractor):
    """Counts images that actually go through the backbone."""

    calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        type(self).calls += len(images)
        return super().__call__(images)


def _extractor() -> CountingExtractor:
    backbone = create_backbone("efficientnet_lite0", get_settings().weights_dir)
    backbone.prepare()
    return CountingExtractor(backbone.onnx_path("fp32"), backbone.spec.normalization)


def test_second_run_pays_no_backbone_pass(tmp_path: Path) -> None:
    samples = load_split(CATSDOGS / "test").samples
    extractor = _extractor()
    cache = FeatureCache(tmp_path / "f.sqlite")
    CountingExtractor.calls = 0
    first = extract_features(samples, extractor, cache, views=2, progress=False)
    assert CountingExtractor.calls == 2 * len(samples)
    second = extract_features(samples, extractor, cache, views=2, progress=False)
    assert CountingExtractor.calls == 2 * len(samples)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (len(samples), 2, 1280)


def test_only_new_images_and_new_views_are_computed(tmp_path: Path) -> None:
    samples = load_split(CATSDOGS / "test").samples
    extractor = _extractor()
    cache = FeatureCache(tmp_path / "f.sqlite")
    extract_features(samples[:4], extractor, cache, views=1, progress=False)
    CountingExtractor.calls = 0
    extract_features(samples, extractor, cache, views=1, progress=False)
    assert CountingExtractor.calls == len(samples) - 4
    CountingExtractor.calls = 0
    extract_features(samples, extractor, cache, views=2, progress=False)  # the plain view is reused
    assert CountingExtractor.calls == len(samples)


def test_augmented_views_differ_and_belong_to_their_recipe(tmp_path: Path) -> None:
    samples = load_split(CATSDOGS / "test").samples[:3]
    extractor = _extractor()
    cache = FeatureCache(tmp_path / "f.sqlite")
    a = extract_features(samples, extractor, cache, views=2, recipe=AugmentRecipe(seed=1), progress=False)
    b = extract_features(samples, extractor, cache, views=2, recipe=AugmentRecipe(seed=2), progress=False)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert not np.allclose(a[:, 1], b[:, 1])
    assert not np.allclose(a[:, 0], a[:, 1])


def test_cache_file_is_named_after_backbone_and_graph(tmp_path: Path) -> None:
    extractor = _extractor()
    cache = cache_for(tmp_path, "efficientnet_lite0", extractor)
    assert cache.path.name == f"efficientnet_lite0-{extractor.graph_digest}.sqlite"
    assert len(cache) == 0
