"""The one place where images become model input, shared by training, evaluation and serving.

Decoding honours EXIF orientation and uses JPEG draft mode (DCT-domain downscaling) so a large
photo is never fully decoded just to be shrunk to 224 px. Normalization is plain data stored in
each model's config, so the serving side needs neither PyTorch nor training code.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catdog.errors import UsageProblem

ImageSource = str | Path | bytes

# Pillow refuses images above ~179 MPx by default; keep a tighter, explicit bound for uploads.
MAX_PIXELS = 64_000_000


class ImageDecodeError(UsageProblem):
    """The input is not an image this project can read."""


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


def open_image(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode an image as upright RGB, or raise ImageDecodeError."""
    try:
        image: Image.Image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if image.width * image.height > MAX_PIXELS:
            raise ImageDecodeError(f"image too large: {image.width}x{image.height} pixels")
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image = ImageOps.exif_transpose(image) or image
        return image.convert("RGB")
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a readable image: {exc}") from exc


def load_image(source: ImageSource, size: int = 224) -> np.ndarray:
    """Decode, orient and squash-resize to size x size (the whole animal stays in frame)."""
    image = open_image(source, draft_size=size)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


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
