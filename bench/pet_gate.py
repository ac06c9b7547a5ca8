"""Calibrate the pet gate: which threshold on pet_score separates cat/dog photos from everything else?

The gate (pet_gate.onnx, from EfficientNet-Lite0's ImageNet head) outputs the softmax mass on the
ImageNet cat and dog classes; a model directory flags an image as "not a cat or dog" when the
score is below its threshold (model_config.json: pet_gate.threshold). This runs the gate on pet
photos (DIR/cats, DIR/dogs) and on non-pet pictures (the images bundled with scikit-image, which
load without network, except chelsea/cat, plus tests/fixtures/nonpet), and prints for each
threshold the share of pets wrongly flagged and the share of non-pets let through.

    .venv/bin/python bench/pet_gate.py                   # the whole shared test split
    .venv/bin/python bench/pet_gate.py --limit 200
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from catdog.ml.artifacts import ModelConfig
from catdog.ml.backbones.efficientnet_lite0 import EfficientNetLite0
from catdog.ml.data import IMAGE_SUFFIXES
from catdog.ml.onnx_runtime import make_session
from catdog.ml.parallel import chunks, prefetched
from catdog.ml.preprocessing import LITE, ImageSource, load_image
from catdog.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PETS = ROOT.parent / "shared" / "data" / "catsdogs" / "test"
FIXTURE_NONPETS = ROOT / "tests" / "fixtures" / "nonpet"
THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
# skimage.data pictures shipped inside the package (no download); "cat" and "chelsea" are a cat photo
SKIMAGE_NONPETS = (
    "astronaut",
    "binary_blobs",
    "brick",
    "camera",
    "cell",
    "checkerboard",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "stereo_motorcycle",
    "text",
)


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any 2-D grey, boolean, float or RGB(A) picture -> uint8 RGB."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / (high - low or 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"not a 2-D picture: shape {array.shape}")
    return np.ascontiguousarray(array[..., :3])


def skimage_nonpets() -> dict[str, bytes]:
    """name -> PNG bytes, for every bundled skimage.data picture that loads here."""
    import skimage.data

    found: dict[str, bytes] = {}
    for name in SKIMAGE_NONPETS:
        try:
            data = getattr(skimage.data, name)()
            if isinstance(data, tuple):  # stereo_motorcycle: (left, right, disparity)
                data = data[0]
            out = io.BytesIO()
            Image.fromarray(to_rgb8(data)).save(out, "PNG")
            found[f"skimage:{name}"] = out.getvalue()
        except Exception as exc:  # a missing file, a download it would need, an odd shape: skip it
            print(f"  skipped skimage.data.{name}: {type(exc).__name__}: {str(exc)[:80]}")
    return found


def pet_files(folder: Path, limit: int | None) -> dict[str, list[Path]]:
    """cats/ and dogs/ image files; with limit, about limit in all, spread over each folder."""
    found: dict[str, list[Path]] = {}
    for class_dir in ("cats", "dogs"):
        files = sorted(p for p in (folder / class_dir).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if limit is not None:
            per_class = max(1, limit // 2)
            files = files[:: max(1, len(files) // per_class)][:per_class]
        found[class_dir] = files
    if not any(found.values()):
        raise SystemExit(f"no images in {folder}/cats or {folder}/dogs")
    return found


def scorer(threads: int) -> Callable[[Sequence[ImageSource]], np.ndarray]:
    gate = EfficientNetLite0()
    gate.prepare()
    session = make_session(gate.pet_gate_path, threads)

    def score(sources: Sequence[ImageSource]) -> np.ndarray:
        out: list[np.ndarray] = []
        for images in prefetched(chunks(list(sources), 16), lambda source: load_image(source, LITE.size)):
            out.append(np.asarray(session.run(None, {"image": LITE(np.stack(images))})[0], np.float64))
        return np.concatenate(out) if out else np.zeros(0)

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pets", type=Path, default=DEFAULT_PETS, help=f"folder with cats/ and dogs/ ({DEFAULT_PETS})")
    parser.add_argument("--limit", type=int, default=None, help="use about N pet images (half cats, half dogs)")
    parser.add_argument("--max-pet-flag", type=float, default=0.01, help="share of pets the gate may flag (0.01)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default CATDOG_THREADS)")
    args = parser.parse_args()
    threads = get_settings().threads if args.threads is None else args.threads

    score = scorer(threads)
    pets = pet_files(args.pets, args.limit)
    pet_scores = {name: score(files) for name, files in pets.items()}
    all_pets = np.concatenate(list(pet_scores.values()))

    print("loading non-pet pictures: skimage.data (bundled ones) and tests/fixtures/nonpet")
    nonpet_sources = skimage_nonpets()
    for path in sorted(FIXTURE_NONPETS.glob("*.jpg")):
        nonpet_sources[f"fixture:{path.stem}"] = path.read_bytes()
    nonpet_names = list(nonpet_sources)
    nonpets = score([nonpet_sources[name] for name in nonpet_names])

    counts = ", ".join(f"{len(files)} {name}" for name, files in pets.items())
    print(f"\npet photos: {counts} from {args.pets}")
    quantiles = np.quantile(all_pets, [0.0, 0.01, 0.05, 0.5])
    print("  pet_score min {:.4f}, 1% {:.4f}, 5% {:.4f}, median {:.4f}".format(*quantiles))
    for name, values in pet_scores.items():
        if len(values):
            print(f"  {name}: min {values.min():.4f}, median {np.median(values):.4f}")
    print(f"non-pet pictures: {len(nonpets)}, pet_score from highest:")
    for i in np.argsort(-nonpets):
        print(f"  {nonpet_names[i]:<32} {nonpets[i]:.4f}")

    names = list(pet_scores)
    per_class = "(" + ", ".join(names) + ")"
    print(f"\n{'threshold':>9}  {'pets flagged as non-pet':>23}  {per_class:>14}  non-pets passed as pets")
    rows = []
    for threshold in THRESHOLDS:
        flagged = [int((pet_scores[name] < threshold).sum()) for name in names]
        pet_rate = sum(flagged) / len(all_pets)
        passed = int((nonpets >= threshold).sum())
        pass_rate = passed / len(nonpets) if len(nonpets) else float("nan")
        rows.append((threshold, pet_rate, pass_rate))
        detail = ", ".join(str(n) for n in flagged)
        print(f"{threshold:>9}  {pet_rate:>23.1%}  {detail:>14}  {pass_rate:>6.1%} ({passed} of {len(nonpets)})")

    current = float(ModelConfig(backbone="", precision="", normalization={}, head={}).pet_gate["threshold"])
    fitting = [row for row in rows if row[1] <= args.max_pet_flag]
    if fitting:
        threshold, pet_rate, pass_rate = max(fitting)
        print(
            f"\nsuggested threshold: {threshold} (the largest flagging <= {args.max_pet_flag:.0%} of pets): "
            f"flags {pet_rate:.1%} of pets, lets {pass_rate:.1%} of non-pets through; "
            f"the model default is {current}"
        )
    else:
        print(
            f"\nno threshold in {THRESHOLDS} flags <= {args.max_pet_flag:.0%} of pets; the model default is {current}"
        )


if __name__ == "__main__":
    main()
