"""The retraining job, top to bottom: claim -> check data -> train -> evaluate -> register -> gate.

It trains on the base training set (CATDOG_DATA_DIR/train) plus every upload, never on the
uploads alone, with the production version's backbone; backbone features come from the feature
cache, so only images never seen cost backbone passes. The new model directory is built in the
job's own folder and reaches the registry only when complete; production moves only when the
promotion gate says so. Progress, heartbeats and cancel checks go through the job's row.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from catdog.db import jobs
from catdog.db.models import RetrainStatus
from catdog.db.session import make_engine, session_factory
from catdog.errors import UsageProblem
from catdog.instance import instance_name
from catdog.jobs.gate import Contender, GateDecision, decide
from catdog.ml.data import CLASS_DIRS, count_class_files
from catdog.settings import Settings, get_settings

if TYPE_CHECKING:  # MLflow's and scikit-learn's imports cost seconds: retrain() imports them when it runs
    from catdog.ml.evaluate import PairedEvaluation
    from catdog.registry import GateReference, ModelVersionInfo, Registry

log = logging.getLogger(__name__)

# Share of the job's percent each phase covers, in order (extracting dominates a cold cache).
PHASES = {"extracting": (0, 70), "training": (70, 85), "building": (85, 88), "reference": (88, 92)}
PHASES |= {"evaluating": (92, 97), "registering": (97, 100)}
PHASES |= {"checking": (70, 70)}  # the label check's K folds (seconds), after its features were extracted
WRITE_EVERY_S = 0.5  # progress rows are written at most this often


class JobCancelled(Exception):
    """The job's cancel flag was seen; it stops where it is and production stays as it was."""


class NotEnoughData(UsageProblem):
    """The base training set is missing, or a class has fewer images than a retrain needs (the API answers 400)."""

    status_code = 400


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
        fraction = done / total if total else 1.0  # nothing to do (every feature cached): the phase is done
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
    if phase == "checking":
        return f"checking labels: fold {done}/{total}"
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


def recipe_of(version: Any) -> dict[str, Any]:
    """The `training` entry of a registered version's model_config.json; {} when it cannot be read."""
    from catdog.ml.artifacts import ModelConfig

    try:
        return dict(ModelConfig.load(version.model_dir).training)
    except Exception as exc:  # a remote store not fetched yet, an old directory: the defaults train
        log.warning("cannot read version %s's training recipe (%s): training with the defaults", version, exc)
        return {}


SAME_FEATURES = "its head on the same test features"


def judge(
    evaluation: PairedEvaluation,
    production: ModelVersionInfo | None,
    reference_info: ModelVersionInfo | None,
    reference: GateReference,
    settings: Settings,
) -> GateDecision:
    """The promotion gate (catdog.jobs.gate.decide) on a retrain's evaluation, with the settings' thresholds.

    A version whose head ran on the new version's test features (same backbone) is compared by
    that accuracy and its paired predictions (McNemar); any other by its registered test metrics,
    and McNemar's test says it did not run. A reference that names no version fails its check.
    """
    new = Contender(None, evaluation.metrics.get("accuracy"), evaluation.predicted.get("new"), "")

    def contender(name: str, info: ModelVersionInfo | None) -> Contender | None:
        if info is None:
            return None
        if name in evaluation.compared:
            accuracy = evaluation.compared[name]["accuracy"]
            return Contender(info.version, accuracy, evaluation.predicted[name], SAME_FEATURES)
        return Contender(info.version, info.metrics.get("accuracy"), None, "its registered test metrics")

    reference_side = contender("reference", reference_info)
    if reference_side is None and reference.version is not None:
        reference_side = Contender(reference.version, None, None, "no such version in the registry")
    return decide(
        new,
        contender("production", production),
        reference_side,
        evaluation.labels,
        tolerance=settings.gate_tolerance,
        alpha=settings.gate_mcnemar_alpha,
        min_accuracy=settings.gate_min_accuracy,
        reference_source=reference.source,
    )


def _version_or_none(registry: Registry, version: int | None) -> ModelVersionInfo | None:
    from catdog.registry import UnknownVersion

    if version is None:
        return None
    try:
        return registry.get(version)
    except UnknownVersion:
        log.warning("the gate's reference version %s is not in the registry: the reference check fails", version)
        return None


def retrain(
    settings: Settings, sessions: sessionmaker[Session], job_id: str, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """Train, evaluate, register and gate one new version; returns the job's result dict."""
    from catdog.jobs.quarantine import check_uploads
    from catdog.ml.artifacts import PLOTS_DIR, ModelConfig, metrics_path, write_json
    from catdog.ml.evaluate import evaluate_with_heads
    from catdog.ml.features import AugmentRecipe
    from catdog.ml.train import config_from_recipe, train
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
    # the recipe of the version it retrains (views, epochs, head, augmentation): the same backbone
    # passes its parent paid, so the feature cache warmed for it (catdog.jobs.warm) serves here
    recipe = recipe_of(production) if production is not None and production.backbone == backbone else {}
    config = config_from_recipe(
        recipe,
        data=str(settings.data_dir),
        out=str(model_dir),
        backbone=backbone,
        extra_data=[str(settings.uploads_dir)],
    )
    if not recipe:  # as `catdog train` does: its cached views serve here too
        config.augment = AugmentRecipe(seed=config.seed)
    # labels checked before they train: likely-mislabelled uploads wait in quarantine (catdog.jobs.quarantine)
    checked = check_uploads(settings, sessions, config, workdir, progress)
    config.extra_data = [str(checked.folder)]  # the checked uploads an admin did not see quarantined
    trained = train(config, progress=False, on_progress=progress, settings=settings)

    progress("evaluating", 0, 1)
    reference = registry.reference()
    reference_info = _version_or_none(registry, reference.version)
    heads = {  # production's and the reference's heads on the new version's test features: paired predictions
        name: registry.local_model_dir(info.version)
        for name, info in (("production", production), ("reference", reference_info))
        if info is not None and info.backbone == backbone
    }
    evaluation = evaluate_with_heads(
        model_dir,
        settings.data_dir,
        settings=settings,
        others=heads,
        plots_dir=model_dir / PLOTS_DIR,
        history=trained.history,
        on_batch=lambda done, total: progress("evaluating", done, total),
    )
    metrics = evaluation.metrics
    write_json(metrics_path(model_dir, metrics["model"]["precision"]), metrics)
    production_metrics = evaluation.compared.get("production") or (production.metrics if production else None)
    verdict = judge(evaluation, production, reference_info, reference, settings)

    progress("registering", 0, 1)  # the last point a cancel is honoured (the API refuses one from here on)
    progress.irrevocable = True
    summary = {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "n")}
    # the record names the uploads folder, not the job's folder of links (deleted with the job)
    uploads = [str(settings.uploads_dir)]
    recorded = ModelConfig.load(model_dir)
    recorded.data["extra_roots"] = uploads
    recorded.training["extra_data"] = uploads
    recorded.save(model_dir)
    trained_uploads = int(checked.summary.get("trained", counts["uploads"]["total"]))
    data = training_dataset(recorded.data, "catdog-train+uploads", trained_uploads)
    version = registry.log_training_run(
        model_dir,
        source="retrain",
        params=config.to_dict() | {"extra_data": uploads},
        history=trained.history,
        test_metrics=metrics,
        dataset=data,
        parent_version=production.version if production else None,
        tags={
            "gate_verdict": "promoted" if verdict.promoted else "staging",
            "gate_reason": verdict.reason,
            "gate_checks": json.dumps(verdict.checks_list()),
            "gate_reference": "" if reference.version is None else str(reference.version),
            "job_id": job_id,  # a crash before the alias moves is repaired from it (catdog.jobs.reconcile)
        },
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
        "gate_checks": verdict.checks_list(),
        "gate_reference": reference.to_dict(),
        "data": data,
        "label_check": checked.summary,
        "seconds": seconds,
        "recipe": {
            "views": config.views,
            "epochs": config.epochs,
            "from_version": production.version if recipe and production else None,
        },
    }
