"""Training, top to bottom: data -> cached backbone features -> head -> model directory.

The backbone is frozen, so its pooled features are computed once per (image, view) and cached;
the head (an MLP) then trains in seconds. The config is plain data and is saved with the model.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import catdog
from catdog.errors import UsageProblem
from catdog.ml.artifacts import CALIBRATION_JSON, HEAD_NPZ, HISTORY_JSON, LAST_BLOCK_NPZ, ModelConfig, write_json
from catdog.ml.backbones import create_backbone
from catdog.ml.backbones.base import Backbone, ensure_onnx, packaged_calibration_table
from catdog.ml.data import CLASS_DIRS, DataError, Split, load_split, resolve_split
from catdog.ml.drift import build_reference
from catdog.ml.export import build_model_dir
from catdog.ml.features import AugmentRecipe, FeatureExtractor, cache_for, extract_features
from catdog.ml.head import Head, HeadConfig, save_head
from catdog.ml.precision import measured_int8_speedup, resolve_precision
from catdog.timefmt import iso_utc

if TYPE_CHECKING:
    from catdog.settings import Settings

log = logging.getLogger(__name__)

# (phase, done, total): "extracting" per batch of backbone passes, "training" per epoch, then
# "building" and "reference" once each. It may raise (a cancelled job) to stop training there.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class TrainConfig:
    data: str
    out: str
    # More folders of cats/ and dogs/ trained on with `data` (the retrain job adds the uploads).
    extra_data: list[str] = field(default_factory=list)
    backbone: str = "vgg16"
    precision: str | None = None  # "auto", "fp32", "int8"; None: settings.precision (CATDOG_PRECISION, auto)
    views: int = 2  # feature views per training image: the plain one + augmented ones
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    early_stopping_patience: int = 8
    lr_patience: int = 3
    lr_factor: float = 0.3
    seed: int = 42
    head: HeadConfig = field(default_factory=HeadConfig)
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)
    # Also train the backbone's last block (VGG16: block 5) on cached maps of the frozen trunk.
    finetune_last_block: bool = False
    finetune_lr_scale: float = 0.01  # the block's learning rate, relative to the head's
    # Write drift_reference.npz (catdog.ml.drift): what the served model's drift is measured against.
    drift_reference: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    seconds: dict[str, float]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


RECIPE_FIELDS = (
    "precision",
    "views",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "val_fraction",
    "early_stopping_patience",
    "lr_patience",
    "lr_factor",
    "seed",
    "finetune_last_block",
    "finetune_lr_scale",
)


def config_from_recipe(recipe: dict[str, Any], **where: Any) -> TrainConfig:
    """A TrainConfig that trains as a model recorded in its model_config.json `training` did.

    recipe: a model's `training` dict (TrainConfig.to_dict() plus results); its views, epochs,
    optimiser, head and augmentation recipe are taken, unknown or missing keys fall back to the
    defaults. where: the fields that say where (data, out, extra_data, backbone, ...), which win.
    A retrain thus pays the backbone passes its parent paid (views), no more.
    """
    values: dict[str, Any] = {key: recipe[key] for key in RECIPE_FIELDS if key in recipe}
    if isinstance(recipe.get("head"), dict):
        known = HeadConfig.__dataclass_fields__
        values["head"] = HeadConfig(**{k: v for k, v in recipe["head"].items() if k in known})
    if isinstance(recipe.get("augment"), dict):
        known = AugmentRecipe.__dataclass_fields__
        values["augment"] = AugmentRecipe(**{k: v for k, v in recipe["augment"].items() if k in known})
    return TrainConfig(**(values | where))


@dataclass(frozen=True)
class TrainingGraph:
    """The backbone graph training extracts features with, and the precision it was chosen for."""

    backbone: Backbone
    precision: str  # "fp32" | "int8"
    table: Path | None  # the int8 range table (copied into the model directory), None for fp32
    path: Path  # the ONNX graph: pooled features, or the trunk's maps when fine-tuning
    finetune: bool


def training_graph(backbone_name: str, precision: str, finetune: bool = False, *, settings: Settings) -> TrainingGraph:
    """The graph `train` runs for a backbone: int8 where it serves in int8 (the same choice as serving).

    precision: "auto", "fp32" or "int8"; auto takes int8 where the CPU runs it faster (timed once,
    catdog.ml.precision, kept in settings.cache_dir) and a packaged range table exists. Fine-tuning
    runs the fp32 trunk. settings: weights_dir (the backbone graphs), cache_dir, threads.
    Raises UsageProblem for fine-tuning asked with int8, KeyError for an unknown backbone.
    """
    backbone = create_backbone(backbone_name, settings.weights_dir)
    if finetune and precision == "int8":
        raise UsageProblem("--finetune-last-block trains and serves in fp32: leave out --precision int8")
    packaged = packaged_calibration_table(backbone.spec.name)
    available = {"fp32", "int8"} if packaged.is_file() and not finetune else {"fp32"}
    chosen = resolve_precision(
        precision,
        available,
        int8_speedup=lambda: measured_int8_speedup(
            backbone.spec.name,
            ensure_onnx(backbone, "fp32"),
            ensure_onnx(backbone, "int8", packaged),
            size=backbone.spec.input_size,
            threads=settings.threads,
            cache_dir=settings.cache_dir,
        ),
    )
    table = packaged if chosen == "int8" else None
    path = backbone.trunk_onnx_path() if finetune else ensure_onnx(backbone, chosen, table)
    return TrainingGraph(backbone, chosen, table, path, finetune)


def load_training_data(data: Path, extra: list[str] | tuple[str, ...] = ()) -> Split:
    """DATA/train (or DATA itself) plus every extra folder's cats/ and dogs/ (missing classes count as empty).

    Raises DataError for a DATA that is not a data set. The merged split's fingerprint covers every image.
    """
    split = load_split(resolve_split(Path(data), "train"))
    for folder in extra:
        root = Path(folder)
        for name in CLASS_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        more = load_split(root)
        split.samples.extend(more.samples)
        split.skipped.extend(more.skipped)
    return split


def train(
    config: TrainConfig,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    *,
    settings: Settings,
) -> TrainResult:
    """Train a head on the frozen backbone and write the model directory config.out.

    settings: where this machine keeps things and how it runs, used for everything training calls:
    weights_dir (backbone weights and graphs), features_dir (the feature cache), cache_dir (the
    int8 timing), threads (ONNX Runtime), precision (when config.precision is None). config is
    the recipe, saved with the model; settings are not.
    on_progress: called as (phase, done, total) while it runs (see ProgressCallback); whatever
    it raises stops training there, before anything is written to config.out.
    Raises DataError (one line) when the data is not a data set or lacks a class.
    """
    started = time.perf_counter()
    seed_everything(config.seed)
    out = Path(config.out)
    report = on_progress or (lambda phase, done, total: None)

    # 1. data: one sample per distinct image content, so duplicates never straddle train/val
    split = load_training_data(Path(config.data), config.extra_data)
    samples = split.unique()
    counts = split.counts()
    if min(counts.values()) == 0:
        raise DataError(f"{split.root} needs images of both classes, found {counts}")

    # 2. the frozen backbone at the precision it serves in; fine-tuning: its frozen trunk, in fp32
    graph = training_graph(
        config.backbone, config.precision or settings.precision, config.finetune_last_block, settings=settings
    )
    backbone, precision, table, finetune = graph.backbone, graph.precision, graph.table, graph.finetune
    extractor = FeatureExtractor(graph.path, backbone.spec.normalization, settings.threads)

    # 3. features (pooled vectors, or the trunk's maps), computed only for unseen (image, view) pairs
    t0 = time.perf_counter()
    cache = cache_for(settings.features_dir, backbone.spec.name, extractor, np.float16 if finetune else np.float32)
    features = extract_features(
        samples,
        extractor,
        cache,
        views=config.views,
        recipe=config.augment,
        progress=progress,
        desc=f"{backbone.spec.name} features",
        on_batch=lambda done, total: report("extracting", done, total),
    )
    cache.close()
    feature_seconds = time.perf_counter() - t0
    labels = np.array([s.label for s in samples], dtype=np.float32)

    # 4. hold out a validation set (all views of an image stay on one side)
    order = np.random.default_rng(config.seed).permutation(len(samples))
    n_val = max(1, round(len(samples) * config.val_fraction)) if len(samples) > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_train = torch.from_numpy(features[train_idx].reshape(-1, features.shape[-1]))
    y_train = torch.from_numpy(np.repeat(labels[train_idx], config.views))
    x_val = torch.from_numpy(features[val_idx, 0])
    y_val = torch.from_numpy(labels[val_idx])

    # 5. the head (and the last block): AdamW, ReduceLROnPlateau, early stopping, best epoch kept
    t1 = time.perf_counter()
    channels = backbone.spec.feature_dim
    head = Head(channels, config.head)
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": config.lr}]
    model: nn.Module = head
    last_block: nn.Module | None = None
    if finetune:
        body = backbone.build_body()
        body.load_state_dict(backbone.load_state())
        last_block = backbone.finetune_split(body)[1]
        side = round((features.shape[-1] / channels) ** 0.5)
        model = nn.Sequential(nn.Unflatten(1, (channels, side, side)), last_block, GlobalAveragePool(), head)
        groups.append({"params": list(last_block.parameters()), "lr": config.lr * config.finetune_lr_scale})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience
    )
    loss_fn = nn.BCEWithLogitsLoss()
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    bar = tqdm(
        range(1, config.epochs + 1),
        desc="train last block + head" if finetune else "train head",
        unit="epoch",
        disable=not progress,
    )
    for epoch in bar:
        model.train()
        permutation = torch.randperm(len(x_train))
        total_loss, correct = 0.0, 0
        for start in range(0, len(x_train), config.batch_size):
            batch = permutation[start : start + config.batch_size]
            logits = model(x_train[batch])
            loss = loss_fn(logits, y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(batch)
            correct += int(((logits > 0).float() == y_train[batch]).sum())
        val_loss, val_acc = _validate(model, x_val, y_val, loss_fn)
        scheduler.step(val_loss)
        record = {
            "epoch": epoch,
            "train_loss": total_loss / len(x_train),
            "train_accuracy": correct / len(x_train),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(record)
        bar.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
        report("training", epoch, config.epochs)
        monitored = val_loss if np.isfinite(val_loss) else record["train_loss"]  # no validation set: tiny data
        if monitored < best_loss - 1e-5:
            best_loss, best_epoch, best_state = monitored, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.early_stopping_patience:
            break
    model.load_state_dict(best_state)
    head_seconds = time.perf_counter() - t1

    # 6. the model directory: head weights, config with lineage, then model.onnx
    report("building", 0, 1)
    out.mkdir(parents=True, exist_ok=True)
    save_head(head.eval(), out / HEAD_NPZ)
    if last_block is not None:
        arrays = {key: value.detach().cpu().numpy() for key, value in last_block.state_dict().items()}
        np.savez(out / LAST_BLOCK_NPZ, **arrays)
    if table is not None:
        shutil.copyfile(table, out / CALIBRATION_JSON)
    write_json(out / HISTORY_JSON, history)
    model_config = ModelConfig(
        backbone=backbone.spec.name,
        precision=precision,
        normalization=backbone.spec.normalization.to_dict(),
        head=config.head.to_dict(),
        training={
            **config.to_dict(),
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "val_loss": best_loss,
            "n_train": len(train_idx),
            "n_val": int(n_val),
        },
        data={
            "root": str(split.root),
            "extra_roots": [str(Path(folder)) for folder in config.extra_data],
            "fingerprint": split.fingerprint(),
            "counts": counts,
            "unique_images": len(samples),
            "duplicate_files": len(split.samples) - len(samples),
            "skipped": len(split.skipped),
        },
        lineage={
            "backbone_source": backbone.prepare()["source"],
            "backbone_graph_sha256_16": extractor.graph_digest,
            "catdog_version": catdog.__version__,
            "created": iso_utc(),
        },
    )
    model_config.save(out)
    build_model_dir(out, settings.weights_dir)
    seconds = {"features": feature_seconds, "head": head_seconds}

    # 7. the drift reference: test-split P(dog) and a sample of training features (mostly cached)
    if config.drift_reference:
        report("reference", 0, 1)
        t2 = time.perf_counter()
        build_reference(out, Path(config.data), settings=settings, progress=progress, train_split=split)
        seconds["drift_reference"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - started
    return TrainResult(model_dir=out, history=history, best_epoch=best_epoch, seconds=seconds)


class GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[start : start + 256]) for start in range(0, len(x), 256)])
        return float(loss_fn(logits, y)), float(((logits > 0).float() == y).float().mean())
