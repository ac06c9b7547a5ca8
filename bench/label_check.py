"""Label checks before a retrain: how many flipped uploads are quarantined, and what it costs in accuracy.

The retrain job's own check (catdog.jobs.quarantine: plain-view features through the graph training
picks and the shared feature cache, catdog.ml.label_check's K-fold cross-validation + cleanlab) on
the real data set:
- uploads: CORRECT training photos (half cats, half dogs) and FLIPPED cat photos uploaded as
  dogs, all taken out of the train split and mirrored + cropped (new content, as a user's photo);
- base set: the rest of the train split (or BASE_PER_CLASS of it per class, for a shorter run);
- retrains with the recipe of the shipped model (models/BACKBONE), each with REPEATS training
  seeds: on the base set plus the uploads the check did not quarantine, plus only the correct
  uploads, and plus every upload (no check); all evaluated on the test split (or TEST_PER_CLASS
  of it per class).
Prints the quarantined share of flipped and of correct uploads, the base set's label issues, the
test accuracies (per seed and their means) and the differences of the means in points, the
times, and the CPU it ran on.

    .venv/bin/python bench/label_check.py [--backbone vgg16] [--correct 100] [--flipped 30]
        [--base-per-class N] [--test-per-class N] [--folds 5] [--repeats 3] [--no-retrain] [--data DIR]

Targets (issue 20): at least 90% of the flipped uploads quarantined, at most 5% of the correct
ones, and test accuracy within 0.2 points of the retrain with only the correct uploads. A cold
feature cache pays one backbone pass per image (VGG16: ~2 images/s on 2 AVX2 cores).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from retrain import new_photo  # bench/ is the script's folder, so its sibling imports

from catdog.ml.precision import describe_cpu_line
from catdog.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catsdogs"


def link_all(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())


def prepare(args: argparse.Namespace, work: Path) -> dict[str, list[Path]]:
    """work/data/{train,test}/{cats,dogs} (links), work/uploads/{cats,dogs} (new photos), work/correct/ (correct ones).

    Returns {"correct": paths, "flipped": paths} of the written uploads.
    """
    rng = random.Random(args.seed)
    cats = sorted((args.data / "train" / "cats").iterdir())
    dogs = sorted((args.data / "train" / "dogs").iterdir())
    rng.shuffle(cats)
    rng.shuffle(dogs)
    half = args.correct // 2
    up_cats, up_dogs = cats[:half], dogs[: args.correct - half]
    flipped = cats[half : half + args.flipped]
    base_cats, base_dogs = cats[half + args.flipped :], dogs[args.correct - half :]
    if args.base_per_class:
        base_cats, base_dogs = base_cats[: args.base_per_class], base_dogs[: args.base_per_class]
    link_all(base_cats, work / "data" / "train" / "cats")
    link_all(base_dogs, work / "data" / "train" / "dogs")
    for class_dir in ("cats", "dogs"):
        test = sorted((args.data / "test" / class_dir).iterdir())
        if args.test_per_class:
            test = random.Random(args.seed + 1).sample(test, min(args.test_per_class, len(test)))
        link_all(test, work / "data" / "test" / class_dir)
    written: dict[str, list[Path]] = {"correct": [], "flipped": []}
    for kind, class_dir, sources in (
        ("correct", "cats", up_cats),
        ("correct", "dogs", up_dogs),
        ("flipped", "dogs", flipped),
    ):
        for i, source in enumerate(sources):
            data = new_photo(source, rng)
            for root in ("uploads", "correct") if kind == "correct" else ("uploads",):
                target = work / root / class_dir / f"{kind}-{i:03d}-{source.stem}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            written[kind].append(work / "uploads" / class_dir / f"{kind}-{i:03d}-{source.stem}.jpg")
    for root in ("uploads", "correct"):
        for class_dir in ("cats", "dogs"):
            (work / root / class_dir).mkdir(parents=True, exist_ok=True)
    return written


def retrain_accuracy(
    work: Path, name: str, uploads: Path, backbone: str, seed: int, settings: Settings
) -> tuple[float, float]:
    """(test accuracy, seconds) of a retrain with the shipped model's recipe on base set + `uploads`."""
    from catdog.ml.artifacts import ModelConfig
    from catdog.ml.evaluate import evaluate_on_features
    from catdog.ml.train import config_from_recipe, train

    started = time.perf_counter()
    recipe = ModelConfig.load(ROOT / "models" / backbone).training
    config = config_from_recipe(
        recipe, data=str(work / "data"), out=str(work / name), backbone=backbone, extra_data=[str(uploads)], seed=seed
    )
    config.drift_reference = False
    shutil.rmtree(work / name, ignore_errors=True)
    train(config, progress=False, settings=settings)
    metrics, _ = evaluate_on_features(work / name, work / "data", settings=settings, progress=False)
    return float(metrics["accuracy"]), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DIR/{train,test}/{cats,dogs}")
    parser.add_argument("--backbone", default="vgg16", help="a backbone with a shipped model in models/")
    parser.add_argument("--correct", type=int, default=100, help="correctly labelled uploads (half cats, half dogs)")
    parser.add_argument("--flipped", type=int, default=30, help="cat photos uploaded as dogs")
    parser.add_argument("--base-per-class", type=int, default=0, help="base set images per class (0: the rest)")
    parser.add_argument("--test-per-class", type=int, default=0, help="test images per class (0: all)")
    parser.add_argument("--folds", type=int, default=5, help="K of the K-fold cross-validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-retrain", action="store_true", help="only the label check")
    parser.add_argument("--repeats", type=int, default=3, help="training seeds per variant (42, 43, ...)")
    parser.add_argument("--keep", type=Path, help="build the folders here and keep them")
    args = parser.parse_args()

    from catdog.jobs.quarantine import plain_features
    from catdog.ml.label_check import check_labels
    from catdog.ml.train import load_training_data
    from catdog.settings import get_settings

    print(describe_cpu_line())
    work = args.keep or Path(tempfile.mkdtemp(prefix="catdog-bench-labels-"))
    try:
        written = prepare(args, work)
        samples = load_training_data(work / "data", [str(work / "uploads")]).unique()
        uploads_root = (work / "uploads").resolve()
        is_upload = np.array([s.path.resolve().is_relative_to(uploads_root) for s in samples])
        flipped = {p.name for p in written["flipped"]}
        is_flipped = np.array([s.path.name in flipped for s in samples])
        n_base = int((~is_upload).sum())
        print(f"base set {n_base} images, uploads {int(is_upload.sum())} ({len(flipped)} cats uploaded as dogs)")

        settings = get_settings()
        t0 = time.perf_counter()
        features = plain_features(samples, args.backbone, settings.precision, settings=settings)
        t1 = time.perf_counter()
        labels = np.array([s.label for s in samples])
        check = check_labels(features, labels, is_upload, folds=args.folds)
        t2 = time.perf_counter()
        q = check.quarantine
        q_flip, q_right = int(q[is_flipped].sum()), int(q[is_upload & ~is_flipped].sum())
        n_flip, n_right = int(is_flipped.sum()), int((is_upload & ~is_flipped).sum())
        base_issues = check.ranked(check.issues & ~is_upload)
        print(
            f"features: {t1 - t0:.1f} s (cached ones cost nothing); label check ({check.folds} folds): {t2 - t1:.1f} s"
        )
        print(
            f"quarantined: flipped {q_flip}/{n_flip} ({q_flip / max(1, n_flip):.1%}, target >= 90%), "
            f"correct {q_right}/{n_right} ({q_right / max(1, n_right):.1%}, target <= 5%)"
        )
        missed = [round(float(check.p_given[i]), 3) for i in np.flatnonzero(is_flipped & ~q)]
        wrong = [round(float(check.p_given[i]), 3) for i in np.flatnonzero(is_upload & ~is_flipped & q)]
        print(
            f"  out-of-sample P(label) of flipped ones not quarantined: {missed}; of correct ones quarantined: {wrong}"
        )
        print(f"base set label issues (reported, trained on): {len(base_issues)} of {n_base}; the 5 least likely:")
        for i in base_issues[:5].tolist():
            print(f"  {samples[i].path.parent.name}/{samples[i].path.name}: P(label) {check.p_given[i]:.4f}")
        if args.no_retrain:
            return 0

        kept = work / "checked"
        for s, up, out in zip(samples, is_upload, q, strict=True):
            if up and not out:
                link_all([s.path], kept / s.path.parent.name)
        for class_dir in ("cats", "dogs"):
            (kept / class_dir).mkdir(parents=True, exist_ok=True)
        # head training is stochastic (seeded: split, order, dropout): each variant is trained with the
        # same `repeats` seeds, and the target compares the means
        variants = {"checked": kept, "correct only": work / "correct", "unchecked (all uploads)": work / "uploads"}
        accuracies: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            seed = 42 + repeat
            for name, folder in variants.items():
                accuracy, seconds = retrain_accuracy(work, "model", folder, args.backbone, seed, settings)
                accuracies[name].append(accuracy)
                print(f"  seed {seed}, {name}: test accuracy {accuracy:.4f} ({seconds:.0f} s)", flush=True)
        means = {name: float(np.mean(values)) for name, values in accuracies.items()}
        for name, values in accuracies.items():
            print(f"test accuracy, {name}: mean {means[name]:.4f} (sd {np.std(values):.4f}, {len(values)} seeds)")
        gap = (means["checked"] - means["correct only"]) * 100
        print(
            f"checked - correct only: {gap:+.2f} points (target within 0.2); "
            f"unchecked - correct only: {(means['unchecked (all uploads)'] - means['correct only']) * 100:+.2f} points"
        )
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
