"""The one place where images become model input, shared by training, evaluation and serving.

Every image goes through `open_image`: bytes (a path is read once into bytes) in, an upright
8-bit RGB picture out, or ImageDecodeError with a short one-line reason. The format is judged by
the bytes, never by a file name or content type. What it does with real-world files:

- Formats: JPEG, MPO, PNG, GIF, BMP, TIFF, WebP, HEIC/HEIF (pillow-heif), AVIF (Pillow),
  JPEG 2000, ICO, PPM/PGM, PSD, QOI. The first frame of a multi-frame file is used.
- JPEG and MPO use draft mode (DCT-domain downscaling): a 12000x9000 photo is decoded at 1/8
  scale, never in full, just to be shrunk to 224 px.
- Pixel limits, checked from the header before any pixel is decoded: at most MAX_PIXELS decoded
  pixels (after draft), and at most MAX_JPEG_PIXELS declared by a JPEG. Anything larger (a pixel
  bomb, or a 12000x9000 PNG) is refused.
- Pixel formats: 16-bit (I;16*) and 16-bit data in Pillow's 32-bit "I" mode are scaled by 1/257
  (so x * 257 gives back x); "I" images with values beyond 16 bits by their own maximum; float
  ("F") by 0..1 -> 0..255, clipped. Transparency (alpha, or a transparent palette entry or
  colour) is composited on white; CMYK, grayscale and palette images are converted to RGB.
- EXIF orientation is honoured (HEIF files come upright from libheif).
- Damaged but complete: a JPEG whose image data is complete but lacks its end marker decodes
  as the intact file, data after the end marker (a phone's trailer) is ignored, a JPEG cut inside
  its image data is refused. PNG metadata too large for Pillow's limits is dropped, never fatal.
- Pillow's warnings and log lines are silenced here (module-level filters, thread-safe), so a bad
  input produces exactly one message: the ImageDecodeError.

Normalization is plain data stored in each model's config, so the serving side needs neither
PyTorch nor training code.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from catdog.errors import UsageProblem

ImageSource = str | Path | bytes

# Decoded pixels (after JPEG draft): 64 MP RGB is ~256 MB in Pillow; larger is refused.
MAX_PIXELS = 64_000_000
# Declared pixels of a JPEG: draft decoding brings a 200 MP phone photo to ~3 MP at 224 px.
MAX_JPEG_PIXELS = 256_000_000

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "HEIF", "AVIF", "JPEG2000", "ICO", "PPM", "PSD", "QOI")
"""Pillow format ids that are tried (MPO comes with JPEG); everything else (EPS, text-based formats, ...) is refused."""

_JPEG_SOI, _JPEG_EOI = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"iCCP"}
# Entropy-coded filler (no 0xFF byte, so no marker) used to tell a cut JPEG scan from a complete one.
_JPEG_PROBE = np.random.default_rng(0).integers(0, 255, 512, dtype=np.uint8).tobytes()
_PROBE_PIXELS = 16_000_000
_WHITE = (255, 255, 255)

# Thread-safe silencing, set once: Pillow warns (DecompressionBombWarning, TIFF metadata) and logs
# (TIFF errors) on odd files, and the caller reports the one ImageDecodeError instead.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
logging.getLogger("PIL").setLevel(logging.CRITICAL)
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


class ImageDecodeError(UsageProblem):
    """The input is not an image this project can read; the message is one short line (the API answers 415)."""

    status_code = 415


@dataclass(frozen=True)
class Normalization:
    """How one backbone wants its pixels: channel order, then (x - mean) / std per channel."""

    channel_order: str  # "RGB" or "BGR"
    mean: tuple[float, float, float]  # in channel_order
    std: tuple[float, float, float]
    size: int = 224

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(
            channel_order=str(data["channel_order"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            size=int(data.get("size", 224)),
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC RGB -> float32 NCHW, normalized."""
        x = images.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        normalized: np.ndarray = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(normalized.transpose(0, 3, 1, 2))


# Keras "caffe" mode: BGR, ImageNet mean subtracted, no scaling.
CAFFE_BGR = Normalization("BGR", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
# EfficientNet-Lite (TF-lite training recipe): (x - 127) / 128.
LITE = Normalization("RGB", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))


# --- the public decoding functions ------------------------------------------------------------
def open_image(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Decode an image into an upright 8-bit RGB PIL image (mode "RGB", width x height pixels).

    source: the file's bytes, or a path that is read once. draft_size: the smallest side the
    caller needs, in pixels; a JPEG/MPO is then decoded at the coarsest DCT scale (1/2, 1/4,
    1/8) that still covers it, and may come out smaller than its declared size.
    Raises ImageDecodeError (one short line) for anything that is not a readable image, too
    large (MAX_PIXELS, MAX_JPEG_PIXELS), or damaged; it never returns a partly decoded picture.
    Thread-safe.
    """
    data = _read(source)
    try:
        return _decode(data, draft_size)
    except ImageDecodeError:
        raise
    except Exception as exc:  # untrusted bytes through many C decoders: any failure means unreadable
        error = _decode_error(exc, data)
    repaired = _repaired(data)
    if repaired is None:
        raise error
    try:
        return _decode(repaired, draft_size)
    except ImageDecodeError:
        raise
    except Exception:
        raise error from None


def load_image(source: ImageSource, size: int = 224) -> np.ndarray:
    """Decode, orient and squash-resize to uint8 RGB of shape (size, size, 3).

    The whole animal stays in frame (no crop). Raises ImageDecodeError as open_image does.
    """
    image = open_image(source, draft_size=size)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_upload(data: bytes, size: int = 224) -> np.ndarray:
    """The web service's entry point: uploaded bytes -> uint8 RGB of shape (size, size, 3).

    Only bytes are accepted (a str is never taken as a server-side path); the format is judged
    by the bytes alone. Raises ImageDecodeError (one short line, fit to show a user as the
    HTTP 4xx `detail`) for text, HTML, SVG, PDF, archives, empty, truncated, damaged or
    oversized input. Thread-safe; nothing is logged or warned.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode_upload takes bytes, not {type(data).__name__}")
    return load_image(bytes(data), size)


# --- reading and identifying ------------------------------------------------------------------
def _read(source: ImageSource) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not data:
        raise ImageDecodeError("empty file")
    return data


def _open(data: bytes) -> Image.Image:
    """Identify the format from the bytes and read the header only; no pixel is decoded."""
    if data.startswith(_JPEG_SOI):
        # Straight to the JPEG plugin: Image.open's global bomb check would refuse (or warn about)
        # a big JPEG that draft mode decodes cheaply; _check_size bounds it instead.
        image: Image.Image = JpegImagePlugin.jpeg_factory(io.BytesIO(data))
        _check_size(image, MAX_JPEG_PIXELS, "for a JPEG")
        return image
    return Image.open(io.BytesIO(data), formats=FORMATS)


def _check_size(image: Image.Image, limit: int, what: str = "") -> None:
    if image.width * image.height > limit:
        raise ImageDecodeError(
            f"image too large: {image.width}x{image.height} pixels (the limit is {limit:,}{' ' + what if what else ''})"
        )


def _decode(data: bytes, draft_size: int | None) -> Image.Image:
    image = _open(data)
    if draft_size and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (draft_size, draft_size))
    _check_size(image, MAX_PIXELS)
    image.load()
    return _to_rgb(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    with contextlib.suppress(Exception):  # a damaged EXIF block is metadata: it never refuses a picture
        ImageOps.exif_transpose(image, in_place=True)
    return image


# --- pixel formats ----------------------------------------------------------------------------
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_CHUNK_PIXELS = 1 << 20  # high-depth rescaling works in bands of rows to bound temporary memory


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image), image.mode))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, _WHITE)
        white.paste(rgba, mask=rgba)  # straight alpha: pixel * a + white * (1 - a)
        return white
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """One channel of 16-bit, 32-bit int or float samples -> uint8 of the same shape."""
    if mode == "F":
        return _in_bands(array, lambda a: np.rint(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0))
    if mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
        top = max(int(array.max()), 1)  # not 16-bit data: scaled by the image's own maximum
        return _in_bands(array, lambda a: np.rint(np.clip(a, 0, None) * (255.0 / top)))
    return _in_bands(array, lambda a: (np.clip(a, 0, 65535).astype(np.uint32) + 128) // 257)


def _in_bands(array: np.ndarray, scale: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    out = np.empty(array.shape, np.uint8)
    rows = max(1, _CHUNK_PIXELS // max(1, array.shape[1]))
    for top in range(0, array.shape[0], rows):
        out[top : top + rows] = scale(array[top : top + rows])
    return out


# --- damaged but complete files ---------------------------------------------------------------
def _repaired(data: bytes) -> bytes | None:
    """The bytes fixed so they decode as the intact file would, or None when there is no such fix."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_without_metadata(data)
    if data.startswith(_JPEG_SOI) and not data.endswith(_JPEG_EOI):
        return _jpeg_with_end_marker(data)
    return None


def _png_without_metadata(data: bytes) -> bytes | None:
    """The PNG without its text and ICC chunks (which Pillow refuses above 1 MB), or None if it has none."""
    parts, pos, dropped = [data[:8]], 8, False
    while pos + 8 <= len(data):
        kind, end = data[pos + 4 : pos + 8], pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if kind in _PNG_METADATA:
            dropped = True
        else:
            parts.append(data[pos:end])
        pos = end
    return b"".join(parts) if dropped else None


def _jpeg_with_end_marker(data: bytes) -> bytes | None:
    """data + the end-of-image marker if the scan data is complete; raise if it is cut.

    libjpeg fills a cut scan with grey and only warns, so a decode that succeeds proves nothing.
    Instead the file is decoded twice, once with the marker right after the data and once with
    filler bytes before it: filler changes the pixels only when the decoder still needed data.
    """
    body = data[:-1] if data.endswith(b"\xff") else data
    fixed = body + _JPEG_EOI
    try:
        complete = np.array_equal(_jpeg_pixels(fixed), _jpeg_pixels(body + _JPEG_PROBE + _JPEG_EOI))
    except Exception:  # broken in another way: report the original error
        return None
    if not complete:
        raise ImageDecodeError("truncated JPEG: the image data is cut short")
    return fixed


def _jpeg_pixels(data: bytes) -> np.ndarray:
    """Decoded at full scale up to _PROBE_PIXELS, so that a progressive JPEG cut in a later
    (high-frequency) scan changes pixels too; above that at the finest DCT scale within it."""
    image = JpegImagePlugin.jpeg_factory(io.BytesIO(data))
    scale = math.ceil(math.sqrt(image.width * image.height / _PROBE_PIXELS))
    if scale > 1:
        image.draft(None, (image.width // scale, image.height // scale))
    return np.asarray(image)


# --- messages ---------------------------------------------------------------------------------
_IMAGE_MAGIC = (
    (_JPEG_SOI, "JPEG"),
    (b"\x89PNG", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"qoif", "QOI"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_OTHER_MAGIC = (
    (b"%pdf", "a PDF document"),
    (b"pk\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"<svg", "an SVG drawing (vector images are not supported)"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<?xml", "an XML document"),
)


def image_kind(data: bytes) -> str | None:
    """The image format by its magic bytes ("JPEG", "PNG", "WebP", "HEIF", "AVIF", "TIFF", ...), or None."""
    return _image_kind(data)


def _image_kind(data: bytes) -> str | None:
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "WebP"
    if data[4:8] == b"ftyp":
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF" if data[8:12] in _HEIF_BRANDS else None
    return next((kind for magic, kind in _IMAGE_MAGIC if data.startswith(magic)), None)


def _not_an_image(data: bytes) -> str:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<?xml") and b"<svg" in head:
        head = b"<svg"
    what = next((what for magic, what in _OTHER_MAGIC if head.startswith(magic)), None)
    if what is None and _is_text(data[:1024]):
        what = "text"
    return f"not an image: this looks like {what}" if what else "not an image in a supported format"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # only a multi-byte character cut at the end is fine
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n\f" for c in text)


def _decode_error(exc: Exception, data: bytes) -> ImageDecodeError:
    if isinstance(exc, Image.DecompressionBombError):
        return ImageDecodeError(f"image too large: more than {MAX_PIXELS:,} pixels")
    kind = _image_kind(data)
    if kind is None:
        return ImageDecodeError(_not_an_image(data))
    if isinstance(exc, UnidentifiedImageError):
        return ImageDecodeError(f"damaged or unsupported {kind} image: its header cannot be read")
    reason = (str(exc).splitlines() or [""])[0][:120] or type(exc).__name__
    return ImageDecodeError(f"damaged {kind} image: {reason}")


def augment(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    rotation: float = 20.0,
    zoom: float = 0.15,
    shift: float = 0.1,
    flip: bool = True,
) -> np.ndarray:
    """One random view as the spec's Keras ImageDataGenerator made it: rotate, zoom, shift, flip."""
    size = image.shape[0]
    angle = math.radians(rng.uniform(-rotation, rotation))
    scale = rng.uniform(1.0 - zoom, 1.0 + zoom)
    tx, ty = rng.uniform(-shift, shift, size=2) * size
    # Inverse affine map (output pixel -> input pixel) around the centre, as PIL expects.
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    c = size / 2.0
    matrix = (cos, sin, c - cos * (c + tx) - sin * (c + ty), -sin, cos, c + sin * (c + tx) - cos * (c + ty))
    out = Image.fromarray(image).transform(
        (size, size), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR, fillcolor=(124, 116, 104)
    )
    array = np.asarray(out, dtype=np.uint8)
    if flip and rng.random() < 0.5:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)
