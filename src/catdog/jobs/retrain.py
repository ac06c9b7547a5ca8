"""The retraining job, top to bottom: claim -> check data -> train -> evaluate -> register -> gate.

It trains on the base training set (CATDOG_DATA_DIR/train) plus every upload, never on the
uploads alone, with the production version's backbone; backbone features come from the feature
cache, so only images never seen cost backbone passes. The new model directory is built in the
job's own folder and reaches the registry only when complete; production moves only when the
promotion gate says so. Progress, heartbeats and cancel checks go through the job's row.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from catdog.db import jobs
from catdog.db.models import RetrainStatus
from catdog.db.session import make_engine, session_factory
from catdog.errors import UsageProblem
from catdog.instance import instance_name
from catdog.ml.data import CLASS_DIRS, count_class_files
from catdog.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Share of the job's percent each phase covers, in order (extracting dominates a cold cache).
PHASES = {"extracting": (0, 70), "training": (70, 85), "building": (85, 88), "reference": (88, 92)}
PHASES |= {"evaluating": (92, 97), "registering": (97, 100)}
WRITE_EVERY_S = 0.5  # progress rows are written at most this often


class JobCancelled(Exception):
    """The job's cancel flag was seen; it stops where it is and production stays as it was."""


class NotEnoughData(UsageProblem):
    """The base training set is missing, or a class has fewer images than a retrain needs."""


@dataclass(frozen=True)
class GateVerdict:
    promoted: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"promoted": self.promoted, "reason": self.reason}


def check_training_data(settings: Settings) -> dict[str, dict[str, int]]:
    """{"base": counts, "uploads": counts} when a retrain can start; NotEnoughData (one line) otherwise.

    Counts are image files by name (cheap); unreadable files are skipped later, with a warning.
    """
    base = settings.data_dir / "train"
    if not all((base / name).is_dir() for name in CLASS_DIRS):
        raise NotEnoughData(
            f"no base training set at {base}/{{cats,dogs}}: set CATDOG_DATA_DIR to a folder holding train/ and test/ "
            "(a retrain trains on the base set plus the uploads, never on the uploads alone)"
        )
    if not all((settings.data_dir / "test" / name).is_dir() for name in CLASS_DIRS):
        raise NotEnoughData(
            f"no test split at {settings.data_dir / 'test'}/{{cats,dogs}}: a new version is judged on it"
        )
    counts = {"base": count_class_files(base), "uploads": count_class_files(settings.uploads_dir)}
    test_counts = count_class_files(settings.data_dir / "test")
    for name in CLASS_DIRS:
        if test_counts[name] < settings.retrain_min_per_class:
            raise NotEnoughData(
                f"only {test_counts[name]} {name} images in the test split; judging a new version needs at least "
                f"{settings.retrain_min_per_class} per class (CATDOG_RETRAIN_MIN_PER_CLASS)"
            )
        have = counts["base"][name] + counts["uploads"][name]
        if have < settings.retrain_min_per_class:
            raise NotEnoughData(
                f"only {have} {name} images (base set + uploads); a retrain needs at least "
                f"{settings.retrain_min_per_class} per class (CATDOG_RETRAIN_MIN_PER_CLASS)"
            )
    return counts


def decide(new: dict[str, Any], production: dict[str, Any] | None, tolerance: float, how: str) -> GateVerdict:
    """The promotion gate: promote when test accuracy is not below production's by more than tolerance.

    new, production: metrics dicts with "accuracy" (and "roc_auc") on the same test split; how:
    how production's figure was obtained, for the reason text. No production figure: not promoted.
    """
    if production is None or production.get("accuracy") is None:
        return GateVerdict(False, "production has no test metrics to compare with: kept as staging")
    ours, theirs = float(new["accuracy"]), float(production["accuracy"])
    figures = f"accuracy {ours:.4f} vs production {theirs:.4f} ({how}; tolerance {tolerance:.4f})"
    if ours + tolerance >= theirs:
        return GateVerdict(True, f"not worse than production: {figures}")
    return GateVerdict(False, f"worse than production: {figures}")


class Progress:
    """Turns (phase, done, total) into the row's phase, percent and ETA; raises JobCancelled when asked."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.cancelled = threading.Event()
        self.irrevocable = False  # set once registering starts: from there the job completes
        self._last_write = 0.0
        self._phase_started: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, phase: str, done: int = 0, total: int = 0) -> None:
        if self.cancelled.is_set() and not self.irrevocable:
            raise JobCancelled()
        now = time.monotonic()
        started = self._phase_started.setdefault(phase, now)
        first = now == started
        if not first and now - self._last_write < WRITE_EVERY_S and done < total:
            return
        self._last_write = now
        low, high = PHASES.get(phase, (0, 100))
        fraction = done / total if total else 0.0
        percent = low + (high - low) * fraction
        eta = (now - started) / done * (total - done) if done and total else None
        detail = _detail(phase, done, total)
        with self._lock, self.sessions() as session:
            if jobs.report_progress(session, self.job_id, phase=phase, detail=detail, percent=percent, eta_seconds=eta):
                self.cancelled.set()
        if self.cancelled.is_set() and not self.irrevocable:
            raise JobCancelled()

    def heartbeat(self) -> None:
        with self._lock, self.sessions() as session:
            if jobs.report_progress(session, self.job_id):
                self.cancelled.set()


def _detail(phase: str, done: int, total: int) -> str:
    if phase == "extracting":
        return f"extracting {done}/{total}" if total else "extracting: every feature cached"
    if phase == "training":
        return f"training epoch {done}/{total}"
    return {"building": "building the ONNX graphs", "reference": "drift reference"}.get(phase, phase)


def run_retrain_job(job_id: str, settings: Settings | None = None) -> None:
    """The queue's entry point: run the job unless it was already claimed, cancelled or finished."""
    settings = settings or get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    sessions = session_factory(engine)
    try:
        with sessions() as session:
            if not jobs.claim_job(session, job_id, instance_name()):
                log.info("job %s is not queued any more: nothing to do", job_id)
                return
        _run_claimed(job_id, settings, sessions)
    finally:
        engine.dispose()


def _run_claimed(job_id: str, settings: Settings, sessions: sessionmaker[Session]) -> None:
    progress = Progress(sessions, job_id)
    beating = threading.Event()
    heart = threading.Thread(target=_beat, args=(progress, beating, settings.job_heartbeat_seconds), daemon=True)
    heart.start()
    workdir = settings.state_dir / "jobs" / job_id
    status, error, result = RetrainStatus.FAILED, None, None
    try:
        result = retrain(settings, sessions, job_id, workdir, progress)
        status = RetrainStatus.SUCCEEDED
    except JobCancelled:
        status, error = RetrainStatus.CANCELLED, "cancelled; production is unchanged"
    except UsageProblem as exc:
        error = str(exc)
    except OSError as exc:
        error = _disk_reason(exc)
    except Exception as exc:  # the job fails with its reason; the worker lives on
        log.exception("retrain job %s failed", job_id)
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        beating.set()
        heart.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    with sessions() as session:
        jobs.finish_job(session, job_id, status, error=error, result=result)
    log.info("retrain job %s %s%s", job_id, status.value, f": {error}" if error else "")


def _beat(progress: Progress, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            progress.heartbeat()
        except Exception:  # a missed heartbeat is retried; the sweeper tolerates several
            log.warning("heartbeat failed", exc_info=True)


def _disk_reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}: free some space and retrain; production is unchanged"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {exc.strerror}; production is unchanged"
    return f"{exc.strerror or exc}{where}; production is unchanged"


def retrain(
    settings: Settings, sessions: sessionmaker[Session], job_id: str, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """Train, evaluate, register and gate one new version; returns the job's result dict."""
    from catdog.ml.artifacts import PLOTS_DIR, ModelConfig, metrics_path, write_json
    from catdog.ml.evaluate import evaluate_on_features
    from catdog.ml.features import AugmentRecipe
    from catdog.ml.train import TrainConfig, train
    from catdog.registry import Registry, training_dataset

    started = time.perf_counter()
    counts = check_training_data(settings)
    registry = Registry(settings)
    production_number = registry.aliases().get("production")
    production = registry.get(production_number) if production_number is not None else None
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        params = dict(job.params) if job is not None else {}
    backbone = params.get("backbone") or (production.backbone if production else settings.default_model)

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    model_dir = workdir / "model"
    config = TrainConfig(
        data=str(settings.data_dir),
        out=str(model_dir),
        backbone=backbone,
        extra_data=[str(settings.uploads_dir)],
        augment=AugmentRecipe(seed=TrainConfig.seed),  # as `catdog train` does: its cached views serve here too
    )
    trained = train(config, progress=False, on_progress=progress)

    progress("evaluating", 0, 1)
    same_backbone = production is not None and production.backbone == backbone
    metrics, production_metrics = evaluate_on_features(
        model_dir,
        settings.data_dir,
        plots_dir=model_dir / PLOTS_DIR,
        history=trained.history,
        on_batch=lambda done, total: progress("evaluating", done, total),
        compare_with=production.model_dir if same_backbone and production else None,
    )
    write_json(metrics_path(model_dir, metrics["model"]["precision"]), metrics)
    how = "its head on the same test features"
    if production_metrics is None and production is not None:
        production_metrics, how = production.metrics, "its registered test metrics"
    verdict = decide(metrics, production_metrics, settings.gate_tolerance, how)

    progress("registering", 0, 1)  # the last point a cancel is honoured (the API refuses one from here on)
    progress.irrevocable = True
    summary = {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "n")}
    data = training_dataset(ModelConfig.load(model_dir).data, "catdog-train+uploads", counts["uploads"]["total"])
    version = registry.log_training_run(
        model_dir,
        source="retrain",
        params=config.to_dict(),
        history=trained.history,
        test_metrics=metrics,
        dataset=data,
        parent_version=production.version if production else None,
        tags={"gate_verdict": "promoted" if verdict.promoted else "staging", "gate_reason": verdict.reason},
    )
    if verdict.promoted:
        registry.promote(version.version, reason=verdict.reason)
    else:
        registry.set_alias("staging", version.version)
    progress("registering", 1, 1)
    seconds = {key: round(value, 1) for key, value in trained.seconds.items()}
    seconds["job"] = round(time.perf_counter() - started, 1)
    return {
        "version": version.version,
        "model_version": version.model_version,
        "backbone": backbone,
        "metrics": summary,
        "production_metrics": None if production_metrics is None else production_metrics.get("accuracy"),
        "gate": verdict.to_dict(),
        "data": data,
        "seconds": seconds,
    }
