"""Inference speed on this machine: backbone graphs, a model directory's served graphs, int8 accuracy, JPEG decoding.

For each graph, images/s at a fixed batch size, twice: on images decoded beforehand (the graph
alone, normalization included) and from the files (decoded in 2 threads ahead of the graph, as
catdog.ml.features and catdog.ml.predictor do). With --model, both of the model's graphs are
timed where it has them (model.onnx fp32, model_int8.onnx int8). Then the cosine similarity of
the int8 VGG16 features to the fp32 ones, and the cost of decoding + resizing a JPEG to 224 px
with Pillow (draft mode, the library's path, and without it) and with simplejpeg. Every table
names the CPU (model, int8-relevant flags): speed figures mean nothing without it. Sessions come
from catdog.ml.onnx_runtime.make_session, so CUDA is used automatically where this onnxruntime has it.

    .venv/bin/python bench/inference.py                       # 64 test images, batch 16
    .venv/bin/python bench/inference.py --images 8 --model models/vgg16
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

from catdog.ml.artifacts import MODEL_GRAPHS, ModelConfig
from catdog.ml.backbones import create_backbone
from catdog.ml.backbones.base import ensure_onnx
from catdog.ml.data import IMAGE_SUFFIXES
from catdog.ml.onnx_runtime import make_session
from catdog.ml.parallel import chunks, prefetched
from catdog.ml.precision import cpu_description, describe_cpu_line
from catdog.ml.preprocessing import Normalization, load_image
from catdog.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catsdogs" / "test"
GRAPHS = ("vgg16_fp32", "vgg16_int8", "lite0_fp32", "model")


@dataclass
class Graph:
    name: str
    path: Path
    normalization: Normalization


@dataclass
class Timing:
    name: str
    providers: list[str]
    model_only: float  # images/s, images already decoded
    with_decode: float  # images/s, decoding in threads ahead of the graph
    features: np.ndarray


def find_images(folder: Path, n: int) -> list[Path]:
    """n image files under folder, taken in turn from each subfolder (cats/, dogs/) so both classes appear."""
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            by_folder[path.parent].append(path)
    queues = list(by_folder.values())
    picked: list[Path] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    if not picked:
        raise SystemExit(f"no images under {folder}")
    return picked


def graphs(selected: list[str], model_dir: Path | None, weights_dir: Path) -> list[Graph]:
    found: list[Graph] = []
    if "vgg16_fp32" in selected or "vgg16_int8" in selected:
        vgg = create_backbone("vgg16", weights_dir)
        if "vgg16_fp32" in selected:
            found.append(Graph("VGG16 fp32 features", ensure_onnx(vgg, "fp32"), vgg.spec.normalization))
        if "vgg16_int8" in selected:
            found.append(Graph("VGG16 int8 features", ensure_onnx(vgg, "int8"), vgg.spec.normalization))
    if "lite0_fp32" in selected:
        lite0 = create_backbone("efficientnet_lite0", weights_dir)
        found.append(Graph("EfficientNet-Lite0 fp32 features", ensure_onnx(lite0, "fp32"), lite0.spec.normalization))
    if model_dir is not None and "model" in selected:
        config = ModelConfig.load(model_dir)
        for precision, filename in MODEL_GRAPHS.items():  # both precisions, where the model has them
            if (model_dir / filename).is_file():
                name = f"{model_dir.name}/{filename} ({config.backbone} {precision} + head)"
                found.append(Graph(name, model_dir / filename, Normalization.from_dict(config.normalization)))
    return found


def time_graph(graph: Graph, paths: list[Path], decoded: np.ndarray, batch: int, threads: int) -> Timing:
    session = make_session(graph.path, threads)
    norm = graph.normalization
    first = [session.get_outputs()[0].name]  # features, or a model graph's p_dog: only what is timed

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(first, {"image": norm(images)})[0], np.float32)

    run(decoded[: min(2, len(decoded))])  # warm-up: first-run allocations and kernel selection
    t0 = time.perf_counter()
    features = np.concatenate([run(decoded[i : i + batch]) for i in range(0, len(decoded), batch)])
    model_only = len(decoded) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    size = norm.size
    for images in prefetched(chunks(paths, batch), lambda path: load_image(path, size)):
        run(np.stack(images))
    with_decode = len(paths) / (time.perf_counter() - t0)
    return Timing(graph.name, session.get_providers(), model_only, with_decode, features)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    dot = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    result: np.ndarray = dot / np.maximum(norms, 1e-12)
    return result


# --- JPEG decoding -----------------------------------------------------------------------------
def pillow_no_draft(data: bytes, size: int) -> np.ndarray:
    opened = Image.open(io.BytesIO(data))
    image = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def simplejpeg_decoder(fast: bool) -> Callable[[bytes, int], np.ndarray]:
    import simplejpeg

    def decode(data: bytes, size: int) -> np.ndarray:
        # DCT-domain downscaling to the smallest size >= size, like Pillow's draft mode; no EXIF rotation
        array = simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=fast, fastupsample=fast, min_height=size, min_width=size
        )
        image = Image.fromarray(array)
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)

    return decode


LARGE = (4000, 3000)


def large_jpeg(blob: bytes) -> bytes:
    """A phone-camera-sized JPEG made from a data image, to show what draft mode saves on big uploads."""
    image = Image.open(io.BytesIO(blob)).convert("RGB").resize(LARGE, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def time_decoder(decode: Callable[[bytes, int], np.ndarray], blobs: list[bytes], size: int) -> tuple[float, float]:
    """(ms per image, mean |pixel difference| to the library's load_image), one thread, bytes in memory."""
    reference = [load_image(blob, size) for blob in blobs]
    outputs = [decode(blob, size) for blob in blobs]  # warm-up and correctness
    diff = float(
        np.mean(
            [np.abs(o.astype(np.int16) - r.astype(np.int16)).mean() for o, r in zip(outputs, reference, strict=True)]
        )
    )
    passes, t0 = 0, time.perf_counter()
    while passes == 0 or time.perf_counter() - t0 < 1.0:
        for blob in blobs:
            decode(blob, size)
        passes += 1
    return (time.perf_counter() - t0) * 1000 / (passes * len(blobs)), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"image folder (default {DEFAULT_DATA})")
    parser.add_argument("--images", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--model", type=Path, default=None, help="also time MODEL_DIR/model.onnx")
    parser.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime threads (default CATDOG_THREADS, 0=all)"
    )
    parser.add_argument("--only", action="append", choices=GRAPHS, help="time only these graphs (repeatable)")
    parser.add_argument("--no-decode-bench", action="store_true", help="skip the JPEG decoder comparison")
    args = parser.parse_args()
    settings = get_settings()
    threads = settings.threads if args.threads is None else args.threads

    cpu = cpu_description()
    print("machine")
    print(f"  CPU                 {cpu['model']} ({cpu['architecture']}, {os.cpu_count()} logical cores)")
    print(f"  int8-relevant flags {', '.join(cpu['flags']) or 'none'}")
    dot = "yes" if cpu["int8_dot_product"] else "no"
    print(f"  int8 dot products   {dot}: precision auto runs {cpu['auto_precision']} where a model has both graphs")
    print(f"  onnxruntime         {ort.__version__}, providers available: {', '.join(ort.get_available_providers())}")
    print(f"  threads             {threads or 'all cores'}")

    paths = find_images(args.data, args.images)
    print(f"  images              {len(paths)} from {args.data}, batch {args.batch}")
    decoded: dict[int, np.ndarray] = {}
    timings: list[Timing] = []
    for graph in graphs(args.only or list(GRAPHS), args.model, settings.weights_dir):
        size = graph.normalization.size
        if size not in decoded:
            decoded[size] = np.stack([load_image(path, size) for path in paths])
        timings.append(time_graph(graph, paths, decoded[size], args.batch, threads))
        print(f"  ... {graph.name}: done", flush=True)

    print(f"\ninference, batch {args.batch}, images/s, on {describe_cpu_line()}")
    width = max(len(t.name) for t in timings) if timings else 10
    print(f"  {'graph':<{width}}  {'graph only':>10}  {'with decode':>11}  provider")
    for t in timings:
        print(f"  {t.name:<{width}}  {t.model_only:>10.2f}  {t.with_decode:>11.2f}  {t.providers[0]}")

    by_name = {t.name: t for t in timings}
    fp32, int8 = by_name.get("VGG16 fp32 features"), by_name.get("VGG16 int8 features")
    if fp32 is not None and int8 is not None:
        cos = cosine(fp32.features, int8.features)
        print(
            f"\nVGG16 int8 vs fp32 pooled features: cosine mean {cos.mean():.5f}, min {cos.min():.5f} "
            f"over {len(cos)} images; int8 speed {int8.model_only / fp32.model_only:.2f}x fp32 "
            f"(on {describe_cpu_line()})"
        )
    served = [t for t in timings if "/model" in t.name]
    if len(served) == 2:
        diff = np.abs(served[0].features - served[1].features)
        print(
            f"\n{served[1].name} vs {served[0].name}: P(dog) differs by {diff.mean():.4f} on average, "
            f"{diff.max():.4f} at most, over {len(diff)} images; int8 speed "
            f"{served[1].model_only / served[0].model_only:.2f}x fp32 (on {describe_cpu_line()})"
        )

    if args.no_decode_bench:
        return
    blobs = [path.read_bytes() for path in paths]
    blobs = [blob for blob in blobs if blob[:2] == b"\xff\xd8"]  # JPEG files only
    if not blobs:
        print("\nno JPEG files: decoder comparison skipped")
        return
    decoders: list[tuple[str, Callable[[bytes, int], np.ndarray]]] = [
        ("Pillow, draft mode (catdog.load_image)", load_image),
        ("Pillow, no draft", pillow_no_draft),
    ]
    try:
        decoders += [
            ("simplejpeg", simplejpeg_decoder(False)),
            ("simplejpeg fastdct+fastupsample", simplejpeg_decoder(True)),
        ]
    except ImportError:
        print("(simplejpeg is not installed)")
    sizes = [Image.open(io.BytesIO(blob)).size for blob in blobs]
    mean_size = f"{np.mean([w for w, _ in sizes]):.0f}x{np.mean([h for _, h in sizes]):.0f}"
    cases = [
        (f"{len(blobs)} data files (mean {mean_size} px)", blobs),
        (f"one {LARGE[0]}x{LARGE[1]} photo (a data image upscaled: where draft mode matters)", [large_jpeg(blobs[0])]),
    ]
    for title, case in cases:
        print(f"\nJPEG decode + resize to 224 px, one thread, bytes in memory: {title}, on {describe_cpu_line()}")
        print(f"  {'decoder':<40}  {'ms/img':>7}  {'img/s':>7}  mean |diff| to load_image (0-255)")
        for name, decode in decoders:
            ms, diff = time_decoder(decode, case, 224)
            print(f"  {name:<40}  {ms:>7.2f}  {1000 / ms:>7.1f}  {diff:.2f}")


if __name__ == "__main__":
    main()
