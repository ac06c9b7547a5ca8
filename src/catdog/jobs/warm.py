"""The worker's feature-cache warmer: an idle worker pays a retrain's backbone passes ahead of time.

A retrain trains a head on cached backbone features, so once every image of the base training set,
the uploads and the test split has its features in the cache, a retrain takes seconds; on a fresh
machine the first one would pay thousands of backbone passes. `FeatureWarmer` is a thread of
`catdog worker` that fills exactly the cache entries a retrain of the production version would
read (its backbone graph at the precision training picks, its views and augmentation recipe:
catdog.ml.train.config_from_recipe; the test split; the drift reference's training sample through
every graph the new version serves with), in small steps, at the lowest CPU priority there is
(SCHED_IDLE: it runs only on cores nothing else wants, so serving never waits for it), pausing
while a job is queued or running. The cache is the progress: a restarted worker resumes where
the last one stopped. Its state is a small JSON file in the state folder that
/api/retrain-status and the retrain page read (`read_status`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from catdog.ml.data import Sample, folder_stamp
from catdog.ml.features import AugmentRecipe
from catdog.settings import Settings
from catdog.timefmt import iso_utc

log = logging.getLogger(__name__)

STATUS_FILE = "feature_cache.json"
STEP_IMAGES = 32  # images per step: a job that starts waits at most one step for the warmer to pause
POLL_SECONDS = 30.0  # how often a warm cache looks for new data, uploads or a new production version
BUSY_POLL_SECONDS = 5.0


@dataclass
class WarmPart:
    """One share of the plan: samples whose `views` a graph must have in the cache."""

    what: str  # "training views", "test split", "drift reference (fp32)", ...
    graph: Path
    views: int
    todo: list[Sample]  # samples with at least one of their views missing from the cache


@dataclass
class WarmPlan:
    """What a retrain of the production version would extract, and what the cache lacks of it."""

    version: int | None
    backbone: str
    precision: str  # the precision training picks on this machine
    recipe: AugmentRecipe
    parts: list[WarmPart]
    done: int  # distinct (graph, image, view) cache entries present
    total: int  # distinct (graph, image, view) cache entries a retrain reads


def status_path(settings: Settings) -> Path:
    return settings.state_dir / STATUS_FILE


def read_status(settings: Settings) -> dict[str, Any]:
    """The warmer's last state: {"state", "done", "total", "backbone", "updated_at", ...}.

    state: "warming" (n of N backbone passes done), "ready" (a retrain needs no backbone pass for
    the data it has), "paused" (a job runs), "off" (CATDOG_WARM_FEATURES=false, no worker yet, or
    nothing to warm, with the reason), "error" (with the error). Never raises.
    """
    if not settings.warm_features:
        return {"state": "off", "reason": "CATDOG_WARM_FEATURES is off"}
    try:
        data = json.loads(status_path(settings).read_text())
        return data if isinstance(data, dict) else {"state": "unknown"}
    except (OSError, ValueError):
        return {"state": "off", "reason": "no worker has looked at the feature cache yet"}


def write_status(settings: Settings, **fields: Any) -> None:
    """Replace the status file atomically (a reader never sees half a file); a failed write is logged."""
    path = status_path(settings)
    fields["updated_at"] = iso_utc()
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(fields))
        part.replace(path)
    except OSError as exc:  # a full disk must not stop the worker
        part.unlink(missing_ok=True)
        log.warning("cannot write %s: %s", path, exc)


def lower_priority() -> str:
    """Put the calling thread (and the threads it starts later) at the lowest CPU priority.

    SCHED_IDLE (Linux, sched(7)): the thread runs only when no other thread wants the core. Threads
    created afterwards (ONNX Runtime's pool, the decoding threads) inherit it. Falls back to nice 19.
    Returns what was applied.
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
            return "nice 19"
        except OSError:
            return "unchanged"


def _fingerprint(settings: Settings, version: int | None) -> tuple[Any, ...]:
    """Changes when production or the files of the base set, test split or uploads change."""
    folders = (settings.data_dir / "train", settings.data_dir / "test", settings.uploads_dir)
    return (version, *(folder_stamp(folder) for folder in folders))


def make_plan(settings: Settings, production: Any | None) -> WarmPlan | str:
    """What to warm for a retrain of `production` (a registered version or None), or why nothing."""
    from catdog.jobs.retrain import recipe_of
    from catdog.ml.data import DataError, load_split, resolve_split
    from catdog.ml.drift import reference_sample
    from catdog.ml.features import cache_keys
    from catdog.ml.train import config_from_recipe, load_training_data, training_graph

    backbone = production.backbone if production is not None else settings.default_model
    config = config_from_recipe(
        recipe_of(production) if production is not None else {},
        data=str(settings.data_dir),
        out="",
        backbone=backbone,
        extra_data=[str(settings.uploads_dir)],
    )
    if config.finetune_last_block:
        return "the production version fine-tunes its last block: its cache holds trunk maps, filled by training"
    try:
        train = load_training_data(settings.data_dir, config.extra_data).unique()
        test = load_split(resolve_split(settings.data_dir, "test")).samples
    except DataError as exc:
        return f"no data set to warm: {exc}"
    graph = training_graph(backbone, config.precision or settings.precision, settings=settings)
    # what a retrain reads: training views and the test split through the training graph (training,
    # the label check, the evaluation), and the drift reference's training sample through every
    # graph the new model serves with (catdog.ml.drift.build_reference: fp32, and int8 with a table)
    groups: list[tuple[str, Path, list[Sample], int]] = [
        ("training views", graph.path, train, config.views),
        ("test split", graph.path, test, 1),
    ]
    sample = reference_sample(train)
    for precision, path in reference_graph_paths(graph.backbone).items():
        groups.append((f"drift reference ({precision})", path, sample, 1))
    keys = {what: cache_keys(samples, views, config.augment) for what, _, samples, views in groups}
    wanted: dict[Path, set[str]] = {}
    for what, path, _, _ in groups:
        wanted.setdefault(path, set()).update(keys[what])
    present = {path: _present(settings, graph.backbone, path, entries) for path, entries in wanted.items()}
    parts = []
    for what, path, samples, views in groups:
        grouped = _grouped(keys[what], views)
        todo = [s for s, k in zip(samples, grouped, strict=True) if not set(k) <= present[path]]
        parts.append(WarmPart(what, path, views, todo))
    return WarmPlan(
        version=production.version if production is not None else None,
        backbone=backbone,
        precision=graph.precision,
        recipe=config.augment,
        parts=parts,
        done=sum(len(present[path] & entries) for path, entries in wanted.items()),
        total=sum(len(entries) for entries in wanted.values()),
    )


def reference_graph_paths(backbone: Any) -> dict[str, Path]:
    """precision -> the pooled-feature graph a new model's drift reference runs (as catdog.ml.drift.reference_graphs
    finds them for a model directory without a fine-tuned block: fp32, and int8 where a range table exists)."""
    from catdog.ml.backbones.base import ensure_onnx, packaged_calibration_table

    graphs = {"fp32": ensure_onnx(backbone, "fp32")}
    table = packaged_calibration_table(backbone.spec.name)
    if table.is_file():
        graphs["int8"] = ensure_onnx(backbone, "int8", table)
    return graphs


def _present(settings: Settings, backbone: Any, graph: Path, keys: set[str]) -> set[str]:
    from catdog.ml.features import FeatureCache, cache_path

    cache = FeatureCache(cache_path(settings.features_dir, backbone.spec.name, graph))
    try:
        return cache.has(list(keys))
    finally:
        cache.close()


T = TypeVar("T")


def _grouped(items: list[T], size: int) -> list[list[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class FeatureWarmer(threading.Thread):
    """A daemon thread of the worker filling the feature cache while no job runs (see the module doc).

    busy(): True while a retrain is queued or running (default: asks the jobs table). Stop with stop().
    """

    def __init__(self, settings: Settings, busy: Callable[[], bool] | None = None) -> None:
        super().__init__(name="feature-warmer", daemon=True)
        self.settings = settings
        self.busy = busy or _job_active(settings)
        self._stop = threading.Event()
        self._ready_for: tuple[Any, ...] | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        priority = lower_priority()
        log.info("feature cache warmer started (%s)", priority)
        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception as exc:  # the warmer never takes the worker down
                log.warning("feature cache warmer: %s", exc, exc_info=True)
                write_status(self.settings, state="error", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
                wait = POLL_SECONDS * 2
            self._stop.wait(wait)

    def step(self) -> float:
        """One look: warm until done, paused or stopped; returns how long to wait before the next look."""
        from catdog.registry import Registry

        if self.busy():
            write_status(self.settings, state="paused", reason="a retrain is queued or running")
            return BUSY_POLL_SECONDS
        registry = Registry(self.settings)
        number = registry.aliases().get("production")
        fingerprint = _fingerprint(self.settings, number)
        if fingerprint == self._ready_for:
            return POLL_SECONDS
        plan = make_plan(self.settings, registry.get(number) if number is not None else None)
        if isinstance(plan, str):
            write_status(self.settings, state="off", reason=plan)
            self._ready_for = fingerprint
            return POLL_SECONDS
        if self.warm(plan):
            self._ready_for = fingerprint
            return POLL_SECONDS
        return BUSY_POLL_SECONDS

    def warm(self, plan: WarmPlan) -> bool:
        """Extract what the plan lacks, step by step; True when nothing is left, False when interrupted."""
        from catdog.ml.backbones import backbone_spec
        from catdog.ml.features import FeatureExtractor, cache_for, cache_keys, extract_features
        from catdog.ml.preprocessing import ImageDecodeError

        head = {"backbone": plan.backbone, "precision": plan.precision, "version": plan.version}
        head["views"] = next((part.views for part in plan.parts if part.what == "training views"), 1)
        steps = [(part, chunk) for part in plan.parts for chunk in _grouped(part.todo, STEP_IMAGES)]
        if not steps:
            write_status(self.settings, state="ready", done=plan.done, total=plan.total, **head)
            return True
        normalization = backbone_spec(plan.backbone).normalization
        extractors: dict[Path, Any] = {}
        caches: dict[Path, Any] = {}
        done, started, passes = plan.done, time.monotonic(), 0
        write_status(self.settings, state="warming", done=done, total=plan.total, **head)
        try:
            for part, chunk in steps:
                if self._stop.is_set() or self.busy():
                    write_status(self.settings, state="paused", done=done, total=plan.total, **head)
                    return False
                if part.graph not in extractors:
                    extractors[part.graph] = FeatureExtractor(
                        part.graph, normalization, self.settings.threads, spin=False
                    )
                    caches[part.graph] = cache_for(self.settings.features_dir, plan.backbone, extractors[part.graph])
                cache = caches[part.graph]
                chunk = [sample for sample in chunk if sample.path.is_file()]
                if not chunk:  # its files were deleted since the plan (an upload removed): plan again
                    continue
                keys = cache_keys(chunk, part.views, plan.recipe)
                before = len(cache.has(keys))  # another part of this graph may have filled some already
                try:
                    extract_features(
                        chunk, extractors[part.graph], cache, views=part.views, recipe=plan.recipe, progress=False
                    )
                except ImageDecodeError:
                    if all(sample.path.is_file() for sample in chunk):
                        raise
                    # a file went away while it was read (an upload deleted meanwhile): not an error
                    # of the warmer's; the next look plans again without it
                    log.info("feature cache warmer: files were deleted meanwhile; planning again")
                    write_status(self.settings, state="paused", done=done, total=plan.total, **head)
                    return False
                passes += len(keys) - before
                done = min(plan.total, done + len(keys) - before)
                rate = passes / max(1e-6, time.monotonic() - started)
                write_status(
                    self.settings,
                    state="warming",
                    done=done,
                    total=plan.total,
                    part=part.what,
                    images_per_second=round(rate, 2),
                    eta_seconds=round((plan.total - done) / rate) if rate > 0 else None,
                    **head,
                )
        finally:
            for cache in caches.values():
                cache.close()
        write_status(self.settings, state="ready", done=plan.total, total=plan.total, **head)
        log.info("feature cache warm: %d backbone passes in %.0f s", passes, time.monotonic() - started)
        return True


def _job_active(settings: Settings) -> Callable[[], bool]:
    from catdog.db import jobs
    from catdog.db.session import make_engine, session_factory

    engine = make_engine(settings.sqlalchemy_url)
    sessions = session_factory(engine)

    def busy() -> bool:
        with sessions() as session:
            return jobs.active_job(session) is not None

    return busy
