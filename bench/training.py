"""Training time, cold and warm: catdog.ml.train.train twice on the same data and feature cache.

The first run starts from an empty feature cache (a temp folder passed to train() as the
settings' features folder) and pays one backbone pass per (image, view); the second finds every
feature cached, so it shows what a retrain costs. Backbone weights and graphs stay in the usual
cache (they are not reset). For each run: seconds for features, for the head, and in total
(total also covers scanning and hashing the files, and writing the model directory with model.onnx).

    .venv/bin/python bench/training.py --backbone efficientnet_lite0 --limit 50
    .venv/bin/python bench/training.py --backbone vgg16 --views 2          # every training image
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from catdog.ml.artifacts import CONFIG_JSON
from catdog.ml.data import CLASS_DIRS, IMAGE_SUFFIXES, resolve_split
from catdog.ml.train import TrainConfig, TrainResult, train
from catdog.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catsdogs"


def subset(data: Path, per_class: int, dest: Path) -> Path:
    """dest/train/{cats,dogs} holding symlinks to per_class images of each class, spread over the folder."""
    source = resolve_split(data, "train")
    for class_dir in CLASS_DIRS:
        files = sorted(p for p in (source / class_dir).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        step = max(1, len(files) // per_class)
        target = dest / "train" / class_dir
        target.mkdir(parents=True, exist_ok=True)
        for path in files[::step][:per_class]:
            (target / path.name).symlink_to(path.resolve())
    return dest


def run_once(config: TrainConfig, features_dir: Path, progress: bool) -> TrainResult:
    """train() with the environment's settings but the feature cache in features_dir."""
    settings = get_settings().model_copy(update={"features_dir_override": features_dir})
    return train(config, progress=progress, settings=settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"DIR/train/{{cats,dogs}} (default {DEFAULT_DATA})"
    )
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--precision", choices=["fp32", "int8"], default=None, help="default: the backbone's own")
    parser.add_argument("--views", type=int, default=2, help="feature views per image (default 2, as catdog train)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--limit", type=int, default=None, help="use only N training images per class")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="catdog-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = subset(args.data, args.limit, tmp / "data") if args.limit else args.data
        features_dir = tmp / "features"  # empty: the first run is cold
        results: list[tuple[str, TrainResult]] = []
        for label in ("cold", "warm"):
            config = TrainConfig(
                data=str(data),
                out=str(tmp / f"model_{label}"),
                backbone=args.backbone,
                precision=args.precision,
                views=args.views,
                epochs=args.epochs,
            )
            results.append((label, run_once(config, features_dir, args.progress)))
            print(f"{label} run done", flush=True)

        first = results[0][1]
        model_config = json.loads((first.model_dir / CONFIG_JSON).read_text())
        n_images = int(model_config["data"]["unique_images"])
        print(
            f"\n{args.backbone} ({model_config['precision']}), {n_images} training images x {args.views} views "
            f"= {n_images * args.views} backbone passes cold, up to {args.epochs} epochs, data {args.data}"
            + (f" ({args.limit} per class)" if args.limit else "")
        )
        print(f"  {'run':<5}  {'features s':>10}  {'head s':>7}  {'other s':>7}  {'total s':>7}  {'epochs':>6}  best")
        for label, result in results:
            s = result.seconds
            other = s["total"] - s["features"] - s["head"]
            best = result.history[result.best_epoch - 1]
            print(
                f"  {label:<5}  {s['features']:>10.1f}  {s['head']:>7.1f}  {other:>7.1f}  {s['total']:>7.1f}  "
                f"{len(result.history):>6}  epoch {result.best_epoch}, val acc {best['val_accuracy']:.3f}"
            )
        cold_features = first.seconds["features"]
        if cold_features > 0:
            print(f"  cold feature throughput: {n_images * args.views / cold_features:.1f} (image, view) pairs/s")


if __name__ == "__main__":
    main()
