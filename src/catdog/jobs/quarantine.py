"""A retrain's label check: which uploads it trains on, and which wait in quarantine.

Before a retrain trains, every upload's label is checked against the base training set and the
other uploads by confident learning (catdog.ml.label_check) on the plain-view backbone features
training reads anyway, through the same graph and feature cache: the training that follows pays
no backbone pass for them. Uploads whose label looks wrong are marked quarantined in the database
(with the reason and their out-of-sample P(label)) and left out; an admin may keep one (then it
trains and is never quarantined again) or delete it. Label issues of the base set are reported in
the job's result and trained on as they are: the base set is the platform's, not a stranger's.

Training reads the uploads through a folder of links to the checked, non-quarantined upload
files (`CheckedUploads.folder`, in the job's own folder): an upload that arrives while the job
runs was not checked, so it waits for the next retrain. The feature cache is keyed by content
(sha256), so reading a file through a link changes nothing there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from catdog import CLASS_NAMES
from catdog.db.models import Upload, utcnow
from catdog.ml.data import CLASS_DIRS, Sample
from catdog.ml.label_check import MAX_P_LABEL, LabelCheck, check_labels
from catdog.settings import Settings

if TYPE_CHECKING:
    from catdog.ml.train import TrainConfig

log = logging.getLogger(__name__)

BASE_EXAMPLES = 5  # base-set label issues named in the job's result (the least likely labels first)
LINKED_FOLDER = "checked-uploads"  # in the job's folder: the uploads the job trains on
Report = Callable[[str, int, int], None]  # the job's progress: (phase, done, total); may raise JobCancelled
CLASS_DIRS_BY_LABEL = {label: name for name, label in CLASS_DIRS.items()}


@dataclass(frozen=True)
class CheckedUploads:
    """folder: cats/ and dogs/ of links to the uploads to train on; summary: the job result's `label_check`."""

    folder: Path
    summary: dict[str, Any]


def plain_features(
    samples: Sequence[Sample],
    backbone: str,
    precision: str,
    on_batch: Callable[[int, int], None] | None = None,
    *,
    settings: Settings,
) -> np.ndarray:
    """(N, C) float32 plain-view pooled features through the graph training picks (catdog.ml.train.training_graph).

    Read from the feature cache (keyed by content and graph) where present; the rest are computed
    and cached. precision: "auto", "fp32" or "int8", as training resolves it. settings: the
    weights, feature cache and int8 timing folders and the threads, as training uses them.
    """
    from catdog.ml.features import pooled_features
    from catdog.ml.train import training_graph

    graph = training_graph(backbone, precision, settings=settings)
    features, _ = pooled_features(
        graph.backbone.spec.name,
        graph.path,
        graph.backbone.spec.normalization,
        samples,
        features_dir=settings.features_dir,
        threads=settings.threads,
        on_batch=on_batch,
    )
    return features


def check_uploads(
    settings: Settings, sessions: sessionmaker[Session], config: TrainConfig, workdir: Path, report: Report
) -> CheckedUploads:
    """Check the labels of every upload, record the verdicts, and link the uploads that train.

    config: the retrain's TrainConfig (its data, backbone, precision and seed; its extra_data is
    read as the uploads, settings.uploads_dir when empty). With settings.label_check off, every
    upload trains and earlier quarantine flags are cleared. Raises what feature extraction raises
    (DataError, OSError) and whatever `report` raises (a cancelled job).
    """
    from catdog.ml.train import load_training_data

    started = time.perf_counter()
    uploads_dir = Path(config.extra_data[0]) if config.extra_data else settings.uploads_dir
    samples = load_training_data(Path(config.data), [str(uploads_dir)]).unique()
    is_upload = np.array([_inside(s.path, uploads_dir) for s in samples], dtype=bool)
    with sessions() as session:
        kept = set(session.scalars(select(Upload.sha256).where(Upload.kept_by_admin.is_(True))))
    is_kept = np.array([s.sha256 in kept for s in samples], dtype=bool) & is_upload
    folder = workdir / LINKED_FOLDER
    if not settings.label_check:
        _clear_flags(sessions)
        linked = _link(folder, [s for s, up in zip(samples, is_upload, strict=True) if up])
        off: dict[str, Any] = {
            "enabled": False,
            "checked": 0,
            "quarantined": 0,
            "kept": int(is_kept.sum()),
            "trained": linked,
        }
        return CheckedUploads(folder, off | {"base_issues": None, "reason": "CATDOG_LABEL_CHECK is off"})

    features = plain_features(
        samples,
        config.backbone,
        config.precision or settings.precision,
        lambda d, t: report("extracting", d, t),
        settings=settings,
    )
    labels = np.array([s.label for s in samples], dtype=np.int64)
    check = check_labels(
        features,
        labels,
        is_upload & ~is_kept,
        folds=settings.label_check_folds,
        seed=config.seed,
        on_fold=lambda done, total: report("checking", done, total),
    )
    if check.skipped is None:
        _record(sessions, samples, is_upload, check)
    else:  # nothing was checked, so everything trains: no flag may say otherwise
        _clear_flags(sessions)
    quarantined = check.quarantine
    linked = _link(folder, [s for s, up, q in zip(samples, is_upload, quarantined, strict=True) if up and not q])
    base = ~is_upload
    base_ranked = check.ranked(check.issues & base)
    summary: dict[str, Any] = {
        "enabled": True,
        "checked": int(is_upload.sum()) if check.skipped is None else 0,
        "quarantined": int(quarantined.sum()),
        "kept": int(is_kept.sum()),
        "trained": linked,
        "folds": check.folds,
        "skipped": check.skipped,
        "method": "cleanlab find_label_issues (prune_by_noise_rate) on K-fold out-of-sample P(class) "
        f"of a logistic-regression head (base set and uploads), or P(label) < {MAX_P_LABEL} (uploads)",
        "base_issues": {
            "count": len(base_ranked),
            "of": int(base.sum()),
            "examples": [
                _example(samples[i], Path(config.data), check.p_given[i]) for i in base_ranked[:BASE_EXAMPLES].tolist()
            ],
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    if len(base_ranked):
        log.info("label check: %d possible label issues in the base set (trained on as they are)", len(base_ranked))
    return CheckedUploads(folder, summary)


def quarantine_reason(class_dir: str, p_label: float, folds: int, cleanlab: bool) -> str:
    """The text an admin reads next to a quarantined upload; cleanlab: whether confident learning flagged it."""
    name = CLASS_NAMES[CLASS_DIRS[class_dir]]
    other = CLASS_NAMES[1 - CLASS_DIRS[class_dir]]
    why = "confident learning (cleanlab) flags it" if cleanlab else "they answer the other class"
    return (
        f"label looks wrong: uploaded as {name}, but heads that never saw it give P({name}) = {p_label:.3f} "
        f"(P({other}) = {1 - p_label:.3f}; {folds}-fold cross-validation on the base set + uploads); {why}"
    )


def _clear_flags(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        session.execute(update(Upload).where(Upload.quarantined.is_(True)).values(quarantined=False))
        session.commit()


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


def _record(
    sessions: sessionmaker[Session], samples: Sequence[Sample], is_upload: np.ndarray, check: LabelCheck
) -> None:
    """Each checked upload's P(label) and verdict; a row an admin keeps is never quarantined (even meanwhile)."""
    now = utcnow()
    with sessions() as session:
        for index in np.flatnonzero(is_upload).tolist():
            sample = samples[index]
            p_label = float(check.p_given[index])
            session.execute(
                update(Upload).where(Upload.sha256 == sample.sha256).values(label_p=p_label, checked_at=now)
            )
            verdict: dict[str, Any] = {"quarantined": False, "quarantine_reason": None}
            if check.quarantine[index]:
                flagged = bool(check.issues[index])
                reason = quarantine_reason(CLASS_DIRS_BY_LABEL[sample.label], p_label, check.folds, flagged)
                verdict = {"quarantined": True, "quarantine_reason": reason}
            session.execute(
                update(Upload).where(Upload.sha256 == sample.sha256, Upload.kept_by_admin.is_(False)).values(**verdict)
            )
        session.commit()


def _link(folder: Path, samples: Sequence[Sample]) -> int:
    """folder/{cats,dogs}/<file name> -> each sample's file (symbolic links); returns how many."""
    for name in CLASS_DIRS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        target = Path(sample.path).resolve()
        os.symlink(target, folder / CLASS_DIRS_BY_LABEL[sample.label] / target.name)
    return len(samples)


def _example(sample: Sample, data: Path, p_label: float) -> dict[str, Any]:
    """One base-set label issue as the job's result names it: its file (relative to the data folder) and P(label)."""
    return {
        "file": _relative(sample.path, data),
        "class": CLASS_DIRS_BY_LABEL[sample.label],
        "sha256": sample.sha256,
        "p_label": round(float(p_label), 4),
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name
