"""Real-world image kinds through the one decoding path (../shared/checks/odd-images, made here).

Each kind is built from a committed fixture photo (tests/fixtures/make_odd_fixtures.py) and must
give what its plain picture gives: the same decoded pixels where the decode should be identical,
and the same class and P(dog) within 0.1 from the tiny Lite0 model. Unreadable input must raise
ImageDecodeError with one short line.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from catdog.errors import UsageProblem
from catdog.ml.preprocessing import ImageDecodeError, decode_upload, load_image, open_image

from ..fixtures import make_odd_fixtures as odd

# pytest's per-test warning capture undoes the module-level filters that preprocessing installs
# at import; test_no_library_warning_or_log_line_leaks checks them in a fresh interpreter.
pytestmark = pytest.mark.filterwarnings("ignore:::PIL")

Photo = Image.Image


@dataclass(frozen=True)
class Kind:
    build: Callable[[Photo], bytes]  # the odd file, from the plain photo
    plain: Callable[[Photo], bytes]  # the plain picture it must decode as (a file's bytes)
    tolerance: int | None = 0  # max |pixel difference| from the plain decode; None: lossy, P(dog) only
    source: Path = odd.CAT


def png(image: Photo) -> bytes:
    return odd.encode(image, "PNG")


def gray_png(photo: Photo) -> bytes:
    return png(odd.gray(photo))


def jpeg(photo: Photo) -> bytes:
    return odd.jpeg(photo)


def committed(name: str) -> Callable[[Photo], bytes]:
    return lambda _: (odd.ODD / name).read_bytes()


def rotated_png(photo: Photo) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° counter-clockwise; the viewer turns it back
    return odd.encode(photo.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif.tobytes())


def rotated_jpeg(photo: Photo) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return odd.jpeg(photo.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


KINDS: dict[str, Kind] = {
    # pixel formats
    "png16-gray": Kind(lambda p: png(odd.gray16(p)), gray_png),
    "tiff16-gray": Kind(lambda p: odd.encode(odd.gray16(p), "TIFF"), gray_png),
    "tiff16-gray-big-endian": Kind(lambda p: odd.encode(odd.gray16(p, ">"), "TIFF"), gray_png),
    "pgm16-gray": Kind(lambda p: odd.encode(odd.gray16(p), "PPM"), gray_png),
    "tiff-float32-gray": Kind(lambda p: odd.encode(odd.gray_float(p), "TIFF"), gray_png),
    "tiff-int32-gray": Kind(lambda p: odd.encode(odd.gray_int32(p), "TIFF"), gray_png, tolerance=None),
    "png48-rgb": Kind(odd.png16_rgb, png),
    "rgba-transparent-bg": Kind(lambda p: png(odd.cutout(p)), lambda p: png(odd.on_white(odd.cutout(p))), 1, odd.DOG),
    "la-transparent-bg": Kind(
        lambda p: png(odd.cutout(p).convert("LA")), lambda p: png(odd.on_white(odd.cutout(p).convert("LA"))), 1, odd.DOG
    ),
    "webp-transparent-bg": Kind(
        lambda p: odd.encode(odd.cutout(p), "WEBP", lossless=True),
        lambda p: png(odd.on_white(odd.cutout(p))),
        1,
        odd.DOG,
    ),
    "png-palette-transparent": Kind(
        lambda p: png(odd.palette_cutout(p)), lambda p: png(odd.on_white(odd.palette_cutout(p))), 1, odd.DOG
    ),
    "gif-palette-transparent": Kind(
        lambda p: odd.encode(odd.palette_cutout(p), "GIF"),
        lambda p: png(odd.on_white(odd.palette_cutout(p))),
        1,
        odd.DOG,
    ),
    "png-palette": Kind(lambda p: png(p.quantize(256)), lambda p: png(p.quantize(256).convert("RGB"))),
    "jpeg-gray": Kind(lambda p: odd.jpeg(odd.gray(p)), gray_png, tolerance=None),
    "jpeg-cmyk": Kind(lambda p: odd.jpeg(p.convert("CMYK")), png, tolerance=None),
    "tiff-cmyk": Kind(lambda p: odd.encode(p.convert("CMYK"), "TIFF"), png),
    "png-exif-rotated": Kind(rotated_png, png),
    "jpeg-exif-rotated": Kind(rotated_jpeg, png, tolerance=None),
    # formats
    "heic": Kind(committed("cat.heic"), png, tolerance=None),
    "avif": Kind(committed("cat.avif"), png, tolerance=None),
    "mpo": Kind(lambda p: odd.encode(p, "MPO", quality=95, save_all=True, append_images=[p.rotate(90)]), jpeg),
    "webp-lossless": Kind(lambda p: odd.encode(p, "WEBP", lossless=True), png),
    "bmp": Kind(lambda p: odd.encode(p, "BMP"), png),
    "tiff-lzw": Kind(lambda p: odd.encode(p, "TIFF", compression="tiff_lzw"), png),
    "jpeg-progressive": Kind(lambda p: odd.jpeg(p, progressive=True), png, tolerance=None),
    # damaged but complete
    "jpeg-no-eoi": Kind(lambda p: odd.without_end_marker(jpeg(p)), jpeg),
    "jpeg-no-eoi-progressive": Kind(
        lambda p: odd.without_end_marker(odd.jpeg(p, progressive=True)), lambda p: odd.jpeg(p, progressive=True)
    ),
    "jpeg-half-eoi": Kind(lambda p: jpeg(p)[:-1], jpeg),
    "jpeg-samsung-trailer": Kind(lambda p: jpeg(p) + odd.SAMSUNG_TRAILER, jpeg),
    "jpeg-motion-photo-trailer": Kind(lambda p: jpeg(p) + odd.MOTION_PHOTO_TRAILER, jpeg),
    "png-big-ztxt": Kind(lambda p: odd.with_png_chunk(png(p), odd.big_ztxt()), png),
    "png-big-itxt": Kind(lambda p: odd.with_png_chunk(png(p), odd.big_itxt()), png),
    "png-big-iccp": Kind(lambda p: odd.with_png_chunk(png(p), odd.big_iccp()), png),
    # size
    "camera-jpeg-12000x9000": Kind(odd.camera_jpeg, gray_png, tolerance=None),
}
EXACT = [name for name, kind in KINDS.items() if kind.tolerance is not None]


@cache
def built(name: str) -> tuple[bytes, bytes]:
    """(odd bytes, plain bytes) of a kind, built once per session."""
    kind = KINDS[name]
    photo = odd.photo(kind.source)
    return kind.build(photo), kind.plain(photo)


@pytest.mark.parametrize("name", EXACT)
def test_kind_decodes_as_its_plain_picture(name: str) -> None:
    data, plain = built(name)
    got, want = load_image(data, 64).astype(int), load_image(plain, 64).astype(int)
    assert np.abs(got - want).max() <= (KINDS[name].tolerance or 0)


BLANK = {"white": (255, 255, 255), "black": (0, 0, 0)}  # what the old decoder made of 16-bit and float


@pytest.fixture(scope="module")
def p_dog(lite0_model: Path) -> dict[str, tuple[float, float, str, str]]:
    """{kind: (P(dog) odd, P(dog) plain, class odd, class plain)}, one model run for all kinds;
    also {"white"/"black": (P(dog), P(dog), class, class)} of a blank picture."""
    from catdog.ml.predictor import Predictor

    names = list(KINDS)
    blanks = [png(Image.new("RGB", (128, 120), color)) for color in BLANK.values()]
    sources = [built(n)[0] for n in names] + [built(n)[1] for n in names] + blanks
    results = Predictor(lite0_model).predict(sources)
    half = len(names)
    table = {
        n: (r.probability, p.probability, r.predicted_class, p.predicted_class)
        for n, r, p in zip(names, results[:half], results[half : 2 * half], strict=True)
    }
    for color, r in zip(BLANK, results[2 * half :], strict=True):
        table[color] = (r.probability, r.probability, r.predicted_class, r.predicted_class)
    return table


@pytest.mark.parametrize("name", list(KINDS))
def test_kind_gets_the_class_and_p_dog_of_its_plain_picture(name: str, p_dog: dict) -> None:
    odd_p, plain_p, odd_class, plain_class = p_dog[name]
    assert odd_class == plain_class
    assert abs(odd_p - plain_p) <= 0.1, (odd_p, plain_p)


@pytest.mark.parametrize("color", list(BLANK))
def test_the_p_dog_check_catches_a_blank_decode(color: str, p_dog: dict) -> None:
    # The old decoder turned 16-bit gray white and float black: the check above must see that.
    blank = p_dog[color][0]
    for name in ("png16-gray", "tiff-float32-gray"):
        plain_p, plain_class = p_dog[name][1], p_dog[name][3]
        assert abs(blank - plain_p) > 0.1 or p_dog[color][2] != plain_class


# --- pixel formats ----------------------------------------------------------------------------
def test_16_bit_values_x_257_come_back_exactly() -> None:
    values = np.arange(256, dtype=np.uint16).reshape(16, 16)
    image = open_image(png(Image.fromarray(values * 257)))
    np.testing.assert_array_equal(np.asarray(image)[..., 0], values)


def test_32_bit_int_beyond_16_bits_is_scaled_by_its_own_maximum() -> None:
    values = np.array([[0, 1 << 20, 1 << 30, -5]], dtype=np.int32)
    decoded = np.asarray(open_image(odd.encode(Image.fromarray(values), "TIFF")))[..., 0]
    np.testing.assert_array_equal(decoded, [[0, 0, 255, 0]])


def test_float_is_0_to_1_clipped_and_nan_is_black() -> None:
    values = np.array([[0.0, 0.5, 1.0, 7.0, -1.0, np.nan]], dtype=np.float32)
    decoded = np.asarray(open_image(odd.encode(Image.fromarray(values), "TIFF")))[..., 0]
    np.testing.assert_array_equal(decoded, [[0, 128, 255, 255, 0, 0]])


def test_transparent_pixels_become_white_not_black() -> None:
    data, _ = built("rgba-transparent-bg")
    corner = np.asarray(open_image(data))[0, 0]
    np.testing.assert_array_equal(corner, [255, 255, 255])


# --- formats ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "file_name"), [("heic", "photo.jpg"), ("avif", "photo.png"), ("mpo", "x.heic")])
def test_format_is_judged_by_content_not_name(name: str, file_name: str, tmp_path: Path) -> None:
    data, _ = built(name)
    path = tmp_path / file_name
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path, 64), load_image(data, 64))


@pytest.mark.parametrize("name", ["rotated.heic", "rotated.avif"])
def test_heic_and_avif_come_out_upright(name: str) -> None:
    assert open_image((odd.ODD / name).read_bytes()).size == (40, 80)


def test_mpo_gets_the_jpeg_draft_decode() -> None:
    mpo, plain_jpeg = built("mpo")
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    full = open_image(mpo).size
    assert open_image(mpo, draft_size=16).size == open_image(plain_jpeg, draft_size=16).size < full
    np.testing.assert_array_equal(load_image(mpo, 16), load_image(plain_jpeg, 16))


def test_camera_jpeg_12000x9000_is_draft_decoded_at_one_eighth() -> None:
    data, _ = built("camera-jpeg-12000x9000")
    assert open_image(data, draft_size=224).size == (1500, 1125)


# --- damaged ----------------------------------------------------------------------------------
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_without_end_marker_decodes_identical_to_the_intact_file(progressive: bool) -> None:
    intact = odd.jpeg(odd.photo(), progressive=progressive)
    np.testing.assert_array_equal(np.asarray(open_image(intact[:-2])), np.asarray(open_image(intact)))


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.5, 0.9, -10, -3])
def test_jpeg_cut_inside_its_image_data_is_refused(keep: float, progressive: bool) -> None:
    intact = odd.jpeg(odd.photo(), progressive=progressive)
    cut = intact[: int(len(intact) * keep)] if keep > 0 else intact[: int(keep)]
    with pytest.raises(ImageDecodeError, match="truncated JPEG"):
        load_image(cut)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.jpg", jpeg(odd.photo()))
    return buffer.getvalue()


REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {
    "text": (lambda: b"not an image\n", "text"),
    "utf-8 text": (lambda: "chat noir, café crème\n".encode(), "text"),
    "html": (lambda: b"<!DOCTYPE html>\n<html><body><img src='cat.jpg'></body></html>", "HTML page"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "SVG"),
    "svg with xml declaration": (lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    "pdf": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n%%EOF\n", "PDF"),
    "zip": (_zip, "zip"),
    "empty": (lambda: b"", "empty"),
    "binary": (lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image"),
    "mp4": (lambda: odd.MOTION_PHOTO_TRAILER, "not an image"),
    "jpeg header only": (lambda: jpeg(odd.photo())[:300], "JPEG"),
    "jpeg cut in scan": (lambda: jpeg(odd.photo())[:2000], "truncated JPEG"),
    "png cut": (lambda: png(odd.photo())[:3000], "PNG"),
    "png garbage": (lambda: b"\x89PNG not really", "PNG"),
    "tiff bad samples per pixel": (lambda: odd.tiff_with_bad_samples_per_pixel(odd.photo()), "TIFF"),
    "png 12000x9000": (lambda: odd.flat_png(12000, 9000), "too large"),
    "png pixel bomb": (lambda: odd.flat_png(30000, 30000, rows=1), "too large"),
    "jpeg pixel bomb": (lambda: odd.with_declared_size(jpeg(odd.photo()), 60000, 60000), "too large"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_input_raises_one_short_clear_line(name: str) -> None:
    build, expected = REFUSED[name]
    with pytest.raises(ImageDecodeError) as caught:
        decode_upload(build(), 224)
    message = str(caught.value)
    assert isinstance(caught.value, UsageProblem)
    assert expected in message and "\n" not in message and len(message) <= 120, message
    assert not re.search(r"BytesIO|0x[0-9a-f]{6}|Traceback|PIL", message), message


@pytest.mark.parametrize("name", ["png pixel bomb", "png 12000x9000", "jpeg pixel bomb"])
def test_pixel_bombs_are_refused_before_any_pixel_is_decoded(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    data = REFUSED[name][0]()
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_upload(data)
    assert time.perf_counter() - start < 1.0  # loose: decoding 900 MP would take many seconds


def test_decode_upload_takes_bytes_only() -> None:
    path = str(odd.CAT)
    with pytest.raises(TypeError):
        decode_upload(path)  # type: ignore[arg-type]
    np.testing.assert_array_equal(decode_upload(odd.CAT.read_bytes(), 32), load_image(odd.CAT, 32))


def test_decoding_is_thread_safe() -> None:
    names = [n for n in KINDS if n != "camera-jpeg-12000x9000"]
    inputs = [built(n)[0] for n in names] * 4
    serial = [load_image(data, 48) for data in inputs]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda data: load_image(data, 48), inputs))
    for one, other in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(one, other)


def test_no_library_warning_or_log_line_leaks(tmp_path: Path) -> None:
    for name in ("tiff bad samples per pixel", "png 12000x9000", "png garbage"):
        (tmp_path / name).write_bytes(REFUSED[name][0]())
    script = (
        "import logging, pathlib, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from catdog.ml.preprocessing import ImageDecodeError, decode_upload\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        decode_upload(pathlib.Path(path).read_bytes())\n"
        "    except ImageDecodeError:\n"
        "        pass\n"
    )
    files = [str(p) for p in tmp_path.iterdir()]
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", script, *files], capture_output=True, text=True, check=True
    )
    assert result.stderr == "" and result.stdout == ""
