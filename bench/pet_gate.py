"""The pet gate's two error rates: pets flagged "not a cat or dog", and non-pets let through.

Compares, on the same pictures, the gate a model directory serves with (by default the k-NN
out-of-distribution score of the served backbone's own pooled features, catdog.ml.pet_ood) and
the older gate (EfficientNet-Lite0's ImageNet head, pet_gate.onnx: the softmax mass on the
ImageNet cat and dog classes, flagged below 0.05), over a range of thresholds each.

Pets: the test split (DIR/cats, DIR/dogs); it never trains anything, and the feature gate's
reference is a sample of the *training* split, so these are held-out pets. Non-pets: pictures
bundled with scientific packages, none downloaded: every image file in skimage/data (but the
two cat photos, chelsea and cat), matplotlib's sample_data photos and drawings, scikit-learn's
two sample photos, and the 200 small face crops of skimage's lfw_subset (Labeled Faces in the
Wild), reported apart ("faces") since they are many pictures of one kind.

    .venv/bin/python bench/pet_gate.py                        # models/vgg16, the whole test split
    .venv/bin/python bench/pet_gate.py --model models/efficientnet_lite0 --limit 400
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from catdog.ml.artifacts import PET_GATE_ONNX, ModelConfig
from catdog.ml.data import IMAGE_SUFFIXES
from catdog.ml.onnx_runtime import make_session
from catdog.ml.parallel import chunks, prefetched
from catdog.ml.pet_ood import DEFAULT_K, DEFAULT_THRESHOLD, METHOD, FeatureOODScorer
from catdog.ml.precision import describe_cpu_line
from catdog.ml.predictor import Predictor
from catdog.ml.preprocessing import LITE, ImageDecodeError, ImageSource, load_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PETS = ROOT.parent / "shared" / "data" / "catsdogs" / "test"
OLD_THRESHOLD = 0.05  # the ImageNet-head gate's threshold before the feature gate (README's earlier table)
OLD_THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3)
NEW_THRESHOLDS = (0.002, 0.003, 0.005, 0.01, 0.02, 0.05)
CAT_PICTURES = ("chelsea", "cat")  # skimage's two cat photos are pets


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any 2-D grey, boolean, float or RGB(A) picture -> uint8 RGB (H, W, 3)."""
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


def nonpet_pictures() -> dict[str, tuple[str, bytes]]:
    """name -> (group, encoded bytes): the bundled pictures of skimage, matplotlib and scikit-learn."""
    import matplotlib
    import skimage
    import sklearn

    found: dict[str, tuple[str, bytes]] = {}
    skimage_data = Path(skimage.__file__).parent / "data"
    for path in sorted(skimage_data.iterdir()):
        if path.suffix.lower() in {".png", ".jpg", ".gif", ".tif"} and not path.stem.startswith(CAT_PICTURES):
            found[f"skimage:{path.name}"] = ("pictures", path.read_bytes())
    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        if (sample_data / name).is_file():
            found[f"matplotlib:{name}"] = ("pictures", (sample_data / name).read_bytes())
    sklearn_images = Path(sklearn.__file__).parent / "datasets" / "images"
    for path in sorted(sklearn_images.glob("*.jpg")):
        found[f"sklearn:{path.name}"] = ("pictures", path.read_bytes())
    faces = skimage_data / "lfw_subset.npy"
    if faces.is_file():
        for i, face in enumerate(np.load(faces)):
            out = io.BytesIO()
            Image.fromarray(to_rgb8(face)).save(out, "PNG")
            found[f"lfw_subset:{i}"] = ("faces", out.getvalue())
    return found


def pet_files(folder: Path, limit: int | None) -> list[Path]:
    """cats/ then dogs/ image files; with limit, about limit in all, spread over each folder."""
    found: list[Path] = []
    for class_dir in ("cats", "dogs"):
        files = sorted(p for p in (folder / class_dir).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if limit is not None:
            per_class = max(1, limit // 2)
            files = files[:: max(1, len(files) // per_class)][:per_class]
        found += files
    if not found:
        raise SystemExit(f"no images in {folder}/cats or {folder}/dogs")
    return found


def readable(sources: dict[str, tuple[str, bytes]], predictor: Predictor) -> dict[str, tuple[str, bytes]]:
    kept = {}
    for name, (group, data) in sources.items():
        try:
            predictor.decode(data)
            kept[name] = (group, data)
        except ImageDecodeError as exc:
            print(f"  skipped {name}: {exc}")
    return kept


def both_scores(
    predictor: Predictor, old_gate: object, sources: Sequence[ImageSource]
) -> tuple[np.ndarray, np.ndarray]:
    """(feature-gate distances (N,), ImageNet-gate scores (N,) or NaN without pet_gate.onnx)."""
    size = predictor.normalization.size
    distances: list[np.ndarray] = []
    old: list[np.ndarray] = []
    for decoded in prefetched(chunks(list(sources), 16), lambda s: (load_image(s, size), load_image(s, LITE.size))):
        images = np.stack([image for image, _ in decoded])
        features = predictor.infer(images).features
        distances.append(scorer_of(predictor).distances(features))
        if old_gate is None:
            old.append(np.full(len(decoded), np.nan))
        else:
            gate_images = LITE(np.stack([g for _, g in decoded]))
            old.append(np.asarray(old_gate.run(None, {"image": gate_images})[0], np.float64))  # type: ignore[attr-defined]
    return np.concatenate(distances), np.concatenate(old)


_SCORERS: dict[int, FeatureOODScorer] = {}


def scorer_of(predictor: Predictor) -> FeatureOODScorer:
    """The model directory's feature gate, or one with the default settings when its config names the old gate."""
    if predictor.feature_gate is not None:
        return predictor.feature_gate
    if id(predictor) not in _SCORERS:
        config = {"method": METHOD, "k": DEFAULT_K, "threshold": DEFAULT_THRESHOLD}
        scorer = FeatureOODScorer.from_model_dir(predictor.model_dir, predictor.precision, config)
        if scorer is None:
            raise SystemExit(f"{predictor.model_dir} has no drift_reference.npz: the feature gate needs one")
        _SCORERS[id(predictor)] = scorer
    return _SCORERS[id(predictor)]


def rates(pet_flagged: np.ndarray, nonpet_passed: np.ndarray, groups: np.ndarray) -> dict[str, float | int]:
    out: dict[str, float | int] = {"pets_flagged": float(pet_flagged.mean()), "pets_flagged_n": int(pet_flagged.sum())}
    for group in ("pictures", "faces"):
        mask = groups == group
        if mask.any():
            out[f"{group}_passed"] = float(nonpet_passed[mask].mean())
            out[f"{group}_passed_n"] = int(nonpet_passed[mask].sum())
            out[f"{group}_n"] = int(mask.sum())
    return out


def show(title: str, rows: list[tuple[float, dict[str, float | int]]], chosen: float) -> None:
    print(f"\n{title}")
    print(f"{'threshold':>10}  {'pets flagged':>16}  {'non-pet pictures passed':>24}  {'faces passed':>16}")
    for threshold, r in rows:
        mark = "  <- serving" if threshold == chosen else ""
        pictures = (
            f"{r.get('pictures_passed', float('nan')):.1%} ({r.get('pictures_passed_n', 0)}/{r.get('pictures_n', 0)})"
        )
        faces = f"{r.get('faces_passed', float('nan')):.1%} ({r.get('faces_passed_n', 0)}/{r.get('faces_n', 0)})"
        pets = f"{r['pets_flagged']:.2%} ({r['pets_flagged_n']})"
        print(f"{threshold:>10}  {pets:>16}  {pictures:>24}  {faces:>16}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "vgg16", help="model directory (models/vgg16)")
    parser.add_argument("--pets", type=Path, default=DEFAULT_PETS, help=f"folder with cats/ and dogs/ ({DEFAULT_PETS})")
    parser.add_argument("--limit", type=int, default=None, help="use about N pet images (half cats, half dogs)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: every core)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()

    print(f"CPU: {describe_cpu_line()}")
    predictor = Predictor(args.model, threads=args.threads)
    gate_file = args.model / PET_GATE_ONNX
    old_gate = make_session(gate_file, args.threads) if gate_file.is_file() else None
    scorer = scorer_of(predictor)
    config = ModelConfig.load(args.model).pet_gate
    serving = float(config.get("threshold", DEFAULT_THRESHOLD)) if config.get("method") == METHOD else DEFAULT_THRESHOLD
    print(
        f"model {args.model} ({predictor.version}, {predictor.precision} graph); feature gate: k={scorer.k}, "
        f"{len(scorer.reference)} reference training images; ImageNet-head gate: {'yes' if old_gate else 'no'}"
    )

    pets = pet_files(args.pets, args.limit)
    nonpets = readable(nonpet_pictures(), predictor)
    names = list(nonpets)
    groups = np.array([nonpets[name][0] for name in names])
    pet_distance, pet_old = both_scores(predictor, old_gate, pets)
    non_distance, non_old = both_scores(predictor, old_gate, [nonpets[name][1] for name in names])
    pet_new, non_new = scorer.p_values(pet_distance), scorer.p_values(non_distance)
    print(
        f"pets: {len(pets)} from {args.pets}; non-pets: {int((groups == 'pictures').sum())} pictures, "
        f"{int((groups == 'faces').sum())} faces"
    )

    new_rows = [(t, rates(pet_new < t, non_new >= t, groups)) for t in NEW_THRESHOLDS]
    show(
        "feature gate (k-NN distance to the training features, conformal p-value): is_pet = pet_score >= threshold",
        new_rows,
        serving,
    )
    old_rows: list[tuple[float, dict[str, float | int]]] = []
    if old_gate is not None:
        old_rows = [(t, rates(pet_old < t, non_old >= t, groups)) for t in OLD_THRESHOLDS]
        show("ImageNet-head gate (EfficientNet-Lite0, pet_gate.onnx), as served before", old_rows, OLD_THRESHOLD)

    print("\nnon-pet pictures the feature gate lets through at the serving threshold:")
    for i in np.argsort(-non_new):
        if non_new[i] >= serving and groups[i] == "pictures":
            old = "" if np.isnan(non_old[i]) else f", ImageNet gate {non_old[i]:.3f}"
            print(f"  {names[i]:<40} pet_score {non_new[i]:.4f}{old}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": describe_cpu_line(),
                    "model": str(args.model),
                    "model_version": predictor.version,
                    "precision": predictor.precision,
                    "serving_threshold": serving,
                    "feature_gate": {str(t): r for t, r in new_rows},
                    "imagenet_gate": {str(t): r for t, r in old_rows},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
