from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog.ml.preprocessing import CAFFE_BGR, LITE, ImageDecodeError, Normalization, augment, load_image, open_image

from ..conftest import FIXTURES


def test_caffe_bgr_flips_channels_and_subtracts_mean_without_scaling() -> None:
    pixel = np.array([[[[10, 20, 30]]]], dtype=np.uint8)  # one RGB pixel, NHWC
    out = CAFFE_BGR(pixel)
    assert out.shape == (1, 3, 1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_lite_scales_rgb_to_about_minus_one_one() -> None:
    pixels = np.array([[[[0, 127, 255]]]], dtype=np.uint8)
    np.testing.assert_allclose(LITE(pixels)[0, :, 0, 0], [-127 / 128, 0.0, 128 / 128])


def test_normalization_round_trips_through_a_dict() -> None:
    assert Normalization.from_dict(CAFFE_BGR.to_dict()) == CAFFE_BGR


def test_load_image_resizes_to_a_square_rgb_array() -> None:
    image = load_image(FIXTURES / "catsdogs" / "train" / "cats" / "cat.1.jpg", 224)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    # A wide image whose EXIF says "rotate 90°": it must come out tall.
    wide = Image.new("RGB", (80, 40), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif)
    assert open_image(path).size == (40, 80)


def test_bytes_and_paths_decode_the_same() -> None:
    path = FIXTURES / "pets" / "chelsea.jpg"
    np.testing.assert_array_equal(load_image(path, 64), load_image(path.read_bytes(), 64))


@pytest.mark.parametrize("name", ["notes.txt", "truncated.jpg", "empty.jpg"])
def test_unreadable_files_raise_a_clear_error(name: str) -> None:
    with pytest.raises(ImageDecodeError):
        load_image(FIXTURES / "bad" / name)


def test_a_missing_path_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="No such file"):
        load_image(tmp_path / "nope.jpg")


def test_garbage_bytes_raise_a_clear_error() -> None:
    with pytest.raises(ImageDecodeError):
        load_image(b"\x89PNG not really")


def test_huge_images_are_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buffer, "PNG")
    with pytest.raises(ImageDecodeError, match="too large"):
        open_image(buffer.getvalue())


def test_augment_is_deterministic_per_seed_and_changes_the_image() -> None:
    image = load_image(FIXTURES / "catsdogs" / "train" / "dogs" / "dog.1.jpg", 224)
    first = augment(image, np.random.default_rng(3))
    again = augment(image, np.random.default_rng(3))
    other = augment(image, np.random.default_rng(4))
    assert first.shape == image.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, image) and not np.array_equal(first, other)
