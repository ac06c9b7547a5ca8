"""The model registry is MLflow's: every training run an MLflow run, every model a registered model version.

Stores: `settings.tracking_uri` serves as both the tracking and the registry URI (embedded
default: SQLite at STATE/mlflow.db; at scale an MLflow server with PostgreSQL), and training
runs' artifacts go under `settings.artifact_root` (default file:// STATE/mlartifacts; s3://...
at scale), the artifact location of the experiment `settings.experiment`. The client always
gets both URIs explicitly: nothing here reads or sets MLflow's global tracking URI, and MLflow's
telemetry is off (catdog.registry sets MLFLOW_DISABLE_TELEMETRY before importing MLflow).

A version's model is the whole catdog model directory (model.onnx, head.npz, model_config.json,
metrics*.json, plots/ ...) logged as the run's artifact folder "model"; the version's source is
that folder's URI. MLflow 3.17 registers such a plain folder as is (no MLmodel file, no flavor):
catdog reads it with catdog.ml.predictor, not with mlflow.pyfunc. A version is created only after
every file of its folder was written, so a half-written model is never registered.

Aliases: `production` (what servers serve) and `staging` (the challenger). Promotions are
remembered as a stack (the registered model's tag `catdog.production_history`, newest last), so
`rollback` undoes one promotion at a time and says NothingToRollBack at the first production.
The promotion gate's reference version (catdog.registry.reference) is the registered model's tag
`catdog.gate_reference`, written at the first promotion ever and moved only upwards by an admin.

Concurrency: MLflow's SQLite store creates and migrates its tables on first use, and two
processes doing that at once fail (one gets "table already exists"); constructing a Registry
therefore holds a file lock next to the database file. Bootstrap, promote and rollback
(read-modify-write of aliases and tags) hold STATE/registry.lock: safe between processes of one
machine; across machines on a shared server, do them from one place (the worker or an admin).

Cost, measured here (2 cores shared with other jobs, load average 2-8; Python 3.11, MLflow 3.17.2):
`import catdog.registry` (MLflow's import) 1.4-5.7 s; the first Registry(...) on a fresh state
folder 6-8 s (MLflow creates and migrates its tables), on an existing database 0.6-3 s (MLflow's
schema check); aliases() 1.5-15 ms (one query), cheap enough to poll every 2 s; bootstrap() of
the two shipped models 1.0 s (it copies their 127 MB into the artifact folder); versions() 13 ms.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from catdog.registry.reference import REFERENCE_TAG, GateReference, ReferenceNotBetter, check_better
from catdog.registry.reference import encode as encode_reference
from catdog.registry.reference import resolve as resolve_reference
from catdog.registry.types import (
    METRIC_KEYS,
    PRODUCTION,
    SOURCES,
    STAGING,
    ModelVersionInfo,
    NothingToRollBack,
    RegistryError,
    UnknownVersion,
    training_dataset,
)
from catdog.settings import Settings
from catdog.timefmt import iso_utc

log = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "model"  # the run's artifact folder holding the model directory
HISTORY_TAG = "catdog.production_history"  # registered-model tag: JSON list of production versions, newest last
BOOTSTRAPPED_TAG = "catdog.bootstrapped"  # registered-model tag: the shipped models were registered
HISTORY_KEPT = 100
DATASET_DIGEST_CHARS = 36  # MLflow's limit on a dataset digest: the first 36 hex digits of the fingerprint
CACHE_MARKER = ".catdog_source"  # inside a downloaded model dir: the artifact URI it came from

# MLflow reports its first-use table creation and migrations at INFO; catdog's CLI output stays clean
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


class Registry:
    """catdog's view of the MLflow registered model `settings.registered_model`.

    Construction opens (and on first use creates) the stores; it raises RegistryError (one
    line) when the tracking URI cannot be opened. Every method may raise RegistryError when the
    store refuses an operation. Thread-safe as MlflowClient is (one client, SQLAlchemy sessions).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.registered_model
        self.tracking_uri = settings.tracking_uri
        self._experiment_id: str | None = None
        self._run_metrics: dict[str, dict[str, float]] = {}
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        database = _sqlite_path(self.tracking_uri)
        lock = settings.state_dir / "mlflow.init.lock"
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            lock = database.with_name(database.name + ".lock")
        try:
            with _file_lock(lock):  # MLflow's first-use migrations race between processes
                self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                self.client.search_registered_models(max_results=1)  # opens (and migrates) the registry store
        except MlflowException as exc:
            raise RegistryError(f"cannot open the MLflow store {self.tracking_uri}: {_message(exc)}") from None
        except Exception as exc:  # SQLAlchemy, alembic, unknown schemes: still one line
            raise RegistryError(f"cannot open the MLflow store {self.tracking_uri}: {_message(exc)}") from None

    # --- reading --------------------------------------------------------------------------------
    def aliases(self) -> dict[str, int]:
        """{"production": 3, "staging": 4}: every alias of the registered model ({} before it exists). One query."""
        with _mlflow_errors():
            try:
                model = self.client.get_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}

    def versions(self) -> list[ModelVersionInfo]:
        """Every version of the registered model, newest (highest number) first; [] before the first."""
        with _mlflow_errors():
            found = list(self.client.search_model_versions(f"name = '{_quoted(self.name)}'"))
        aliases = self.aliases()
        found.sort(key=lambda mv: int(mv.version), reverse=True)
        return [self._info(mv, aliases) for mv in found]

    def get(self, version: int) -> ModelVersionInfo:
        """One version; UnknownVersion when the registered model has no such version."""
        return self._info(self._model_version(version), self.aliases())

    def local_model_dir(self, version: int) -> Path:
        """The version's model directory on this machine; UnknownVersion when there is no such version.

        A file:// artifact store: the artifact folder itself (nothing is copied). Any other store
        (s3://, mlflow-artifacts:/ ...): downloaded once into STATE/registry-cache/<version>/,
        into a temporary folder first and renamed into place, so a reader never sees half a
        model; a cached folder from another artifact URI (another store) is replaced.
        """
        with _mlflow_errors():
            self._model_version(version)
            uri = self.client.get_model_version_download_uri(self.name, str(version))
        local = _local_path(uri)
        if local is not None:
            return local
        return self._download(version, uri)

    # --- writing --------------------------------------------------------------------------------
    def bootstrap(self) -> list[ModelVersionInfo]:
        """Register the shipped models once: every settings.models_dir/*/ with model_config.json and model.onnx.

        Each becomes an MLflow run (source "shipped": its training config as params, history.json
        per epoch, metrics.json as test_* and metrics_int8.json as test_int8_*, the directory as
        artifacts, its training data as the input) and a version; settings.default_model's
        version first, so it gets the lowest number, and it becomes production unless an alias
        production exists. Idempotent and safe to call from several processes at once: returns
        what it registered, [] when it was done before. A crash halfway is finished by the next
        call (a model already registered as shipped, by content id, is not registered twice).
        """
        with self._lock():
            self._ensure_registered_model()
            with _mlflow_errors():
                model = self.client.get_registered_model(self.name)
            if model.tags.get(BOOTSTRAPPED_TAG) == "true":
                return []
            from catdog.ml.predictor import model_version

            registered_shipped = {
                info.model_version: info.version for info in self.versions() if info.source == "shipped"
            }
            default_version = None
            done: list[ModelVersionInfo] = []
            for model_dir in self._shipped_dirs():
                config = _read_json(model_dir / "model_config.json")
                content_id = model_version(model_dir, str(config.get("backbone", model_dir.name)))
                version = registered_shipped.get(content_id)
                if version is None:
                    info = self._register_shipped(model_dir, config)
                    done.append(info)
                    version = info.version
                if model_dir.name == self.settings.default_model:
                    default_version = version
            if default_version is not None and PRODUCTION not in self.aliases():
                self._set_production(default_version, previous=None, reason="shipped default")
            with _mlflow_errors():
                self.client.set_registered_model_tag(self.name, BOOTSTRAPPED_TAG, "true")
            return [self.get(info.version) for info in done]

    def log_training_run(
        self,
        model_dir: Path,
        *,
        source: str,
        params: dict[str, Any],
        history: list[dict[str, Any]],
        test_metrics: dict[str, Any],
        dataset: dict[str, Any],
        parent_version: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> ModelVersionInfo:
        """Log one training as an MLflow run in settings.experiment and register its model as a new version.

        model_dir: a complete model directory (model_config.json, model.onnx ...), logged whole
        as the run's artifact folder "model" (plots included). source: "shipped", "train" or
        "retrain". params: the training config, nested dicts flattened to dotted keys ("head.hidden").
        history: one dict per epoch ({"epoch": 1, "train_loss": ..., "val_accuracy": ...}),
        logged as metrics with step = epoch. test_metrics: the test split's figures (accuracy,
        precision, recall, f1, roc_auc, log_loss as fractions, n images; other numbers too),
        logged as test_<name>; model_dir/metrics_int8.json, when there, as test_int8_<name>.
        dataset: {"name", "digest" (the data fingerprint, hex), "counts" ({"cats": n, "dogs": n}),
        "uploads" (images from uploads), "root"}: the run's input (MLflow keeps the first 36 hex
        digits as the dataset digest; the version's data_digest tag keeps all of them).
        The version gets tags model_version, backbone, source, parent_version, data_digest,
        data_counts, data_uploads, plots, run_name, and `tags` on top. No alias changes.
        Raises UsageProblem for a folder that is not a model directory or an unknown source; the
        run is marked FAILED when anything fails after it started.
        """
        from catdog.errors import UsageProblem

        model_dir = Path(model_dir)
        if source not in SOURCES:
            raise UsageProblem(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        for needed in ("model_config.json", "model.onnx"):
            if not (model_dir / needed).is_file():
                raise UsageProblem(f"{model_dir} is not a model directory: it has no {needed}")
        return self._log_run(
            model_dir,
            source=source,
            params=params,
            history=history,
            test_metrics=test_metrics,
            dataset=dataset,
            parent_version=parent_version,
            tags=tags or {},
        )

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at `version` (UnknownVersion if there is none).

        Use promote() for production: it records the step so that rollback() can undo it.
        """
        self._model_version(version)
        with _mlflow_errors():
            self.client.set_registered_model_alias(self.name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        """Remove `alias`; nothing happens when it does not exist."""
        if alias not in self.aliases():
            return
        with _mlflow_errors():
            self.client.delete_registered_model_alias(self.name, alias)

    def set_tags(self, version: int, tags: dict[str, str]) -> None:
        """Set (add or replace) tags of a version, e.g. {"gate_verdict": "staging", "gate_reason": "..."}."""
        self._model_version(version)
        with _mlflow_errors():
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, str(value))

    def promote(self, version: int, reason: str = "manual") -> tuple[int, int | None]:
        """Make `version` production; returns (version, the previous production or None).

        The step is pushed on the production history (rollback undoes it); the promoted version
        gets tags previous_production, promoted_at and promote_reason; a staging alias on
        `version` is dropped (it is no longer a challenger). Promoting the current production
        changes nothing and returns (version, version). UnknownVersion for a missing version.
        """
        self._model_version(version)
        with self._lock():
            previous = self.aliases().get(PRODUCTION)
            if previous == version:
                return version, previous
            self._set_production(version, previous=previous, reason=reason)
            if self.aliases().get(STAGING) == version:
                self.delete_alias(STAGING)
        log.info("production -> version %d (was %s): %s", version, previous, reason)
        return version, previous

    def rollback(self, skip: Collection[int] = ()) -> tuple[int, int]:
        """Production goes back one promotion; returns (new production, the version rolled back from).

        skip: versions known not to load (a server's failed loads): passed over, and dropped from the
        production history. Raises NothingToRollBack (one line) when production has no earlier
        version left (e.g. it is still the shipped default) or there is no production at all.
        """
        with self._lock():
            current = self.aliases().get(PRODUCTION)
            if current is None:
                raise NothingToRollBack("there is no production version to roll back")
            history = self._history()
            passed = []
            while history and (history[-1] == current or history[-1] in skip):
                popped = history.pop()
                if popped != current:
                    passed.append(popped)
            if not history:
                why = f"version {current} is the first production version"
                if passed:
                    why = f"the earlier production versions ({', '.join(map(str, passed))}) failed to load here"
                raise NothingToRollBack(f"nothing to roll back to: {why}")
            target = history[-1]
            self._model_version(target)
            with _mlflow_errors():
                self.client.set_registered_model_alias(self.name, PRODUCTION, str(target))
                self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))
                self.client.set_model_version_tag(self.name, str(current), "rolled_back_at", iso_utc())
        log.info("production rolled back: version %d -> %d", current, target)
        return target, current

    def reference(self) -> GateReference:
        """The promotion gate's reference version and how it was chosen (catdog.registry.reference's order)."""
        model = self._registered_model()
        tags = dict(model.tags or {}) if model is not None else {}
        aliases = {alias: int(v) for alias, v in (model.aliases or {}).items()} if model is not None else {}
        return resolve_reference(self.settings.gate_reference, tags, _history_of(tags), aliases.get(PRODUCTION))

    def set_reference(self, version: int, set_by: str) -> tuple[int, int | None]:
        """Make `version` the gate's reference; returns (version, the previous stored reference or None).

        Only upwards: ReferenceNotBetter (one line) when its registered test accuracy is below the
        current reference's or missing; UnknownVersion for a missing version. The setting
        CATDOG_GATE_REFERENCE, when set, still wins over what is stored here.
        """
        self._model_version(version)
        with self._lock():
            model = self._registered_model()
            tags = dict(model.tags or {}) if model is not None else {}
            current = resolve_reference(None, tags, _history_of(tags), self.aliases().get(PRODUCTION)).version
            current_accuracy = None
            if current is not None:
                with contextlib.suppress(UnknownVersion):
                    current_accuracy = self.get(current).metrics.get("accuracy")
            candidate = self.get(version)
            production = self.aliases().get(PRODUCTION)
            if production is not None and candidate.backbone != self.get(production).backbone:
                raise ReferenceNotBetter(
                    f"version {version} is {candidate.backbone}, production is {self.get(production).backbone}: "
                    "the reference must share production's backbone (its head is judged on the same test features); "
                    "CATDOG_GATE_REFERENCE pins any version"
                )
            check_better(version, candidate.metrics.get("accuracy"), current, current_accuracy)
            with _mlflow_errors():
                tag = encode_reference(version, set_by, iso_utc())
                self.client.set_registered_model_tag(self.name, REFERENCE_TAG, tag)
        log.info("gate reference -> version %d (was %s; %s)", version, current, set_by)
        return version, current

    # --- internals ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with _file_lock(self.settings.state_dir / "registry.lock"):
            yield

    def _model_version(self, version: int) -> ModelVersion:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise UnknownVersion(f"model version must be a whole number from 1, got {version!r}")
        with _mlflow_errors():
            try:
                return self.client.get_model_version(self.name, str(version))
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise UnknownVersion(f"no model version {version} in the registry ({self.name})") from None
                raise

    def _history(self) -> list[int]:
        with _mlflow_errors():
            return _history_of(dict(self.client.get_registered_model(self.name).tags))

    def _registered_model(self) -> Any:
        """The MLflow RegisteredModel, None before it exists."""
        with _mlflow_errors():
            try:
                return self.client.get_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

    def _set_production(self, version: int, *, previous: int | None, reason: str) -> None:
        """Alias production -> version and push it on the history (under self._lock)."""
        history = self._history()
        if previous is not None and (not history or history[-1] != previous):
            history.append(previous)  # production was set some other way (the MLflow UI): remember it too
        history = [*history, version][-HISTORY_KEPT:]
        tags = {"promoted_at": iso_utc(), "promote_reason": reason}
        with _mlflow_errors():  # the first production ever is the gate's default reference: remember it
            if REFERENCE_TAG not in self.client.get_registered_model(self.name).tags:
                self.client.set_registered_model_tag(
                    self.name, REFERENCE_TAG, encode_reference(history[0], "first production", iso_utc())
                )
        if previous is not None:
            tags["previous_production"] = str(previous)
        with _mlflow_errors():
            self.client.set_registered_model_alias(self.name, PRODUCTION, str(version))
            self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)

    def _ensure_registered_model(self) -> None:
        with _mlflow_errors():
            try:
                self.client.get_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                try:
                    self.client.create_registered_model(
                        self.name, description="catdog's cat/dog classifiers (model directories)"
                    )
                except MlflowException as again:  # another process created it meanwhile
                    if again.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise

    def _experiment(self) -> str:
        """The id of settings.experiment, created with artifact_location = settings.artifact_root if missing."""
        if self._experiment_id is None:
            name = self.settings.experiment
            with _mlflow_errors():
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    try:
                        self._experiment_id = self.client.create_experiment(
                            name, artifact_location=self.settings.artifact_root
                        )
                    except MlflowException as exc:  # created by another process meanwhile
                        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                            raise
                        again = self.client.get_experiment_by_name(name)
                        assert again is not None
                        self._experiment_id = again.experiment_id
                else:
                    self._experiment_id = found.experiment_id
        return self._experiment_id

    def _shipped_dirs(self) -> list[Path]:
        root = self.settings.models_dir
        found = []
        for config in sorted(root.glob("*/model_config.json")) if root.is_dir() else []:
            if (config.parent / "model.onnx").is_file():
                found.append(config.parent)
            else:
                log.warning(
                    "not registering %s: it has no model.onnx (run `catdog build %s`)", config.parent, config.parent
                )
        default = self.settings.default_model
        return sorted(found, key=lambda d: (d.name != default, d.name))

    def _register_shipped(self, model_dir: Path, config: dict[str, Any]) -> ModelVersionInfo:
        metrics_file = model_dir / "metrics.json"
        if not metrics_file.is_file():
            metrics_file = model_dir / "metrics_int8.json"
        test_metrics = _read_json(metrics_file) if metrics_file.is_file() else {}
        history = _read_json(model_dir / "history.json") if (model_dir / "history.json").is_file() else []
        data = config.get("data") or {}
        root = str(data.get("root") or "")
        dataset = training_dataset(data, f"{Path(root).parent.name or 'data'}-train" if root else "train")
        training = dict(config.get("training") or {})
        params = {"backbone": config.get("backbone"), "precision": config.get("precision"), **training}
        return self._log_run(
            model_dir,
            source="shipped",
            params=params,
            history=history if isinstance(history, list) else [],
            test_metrics=test_metrics,
            dataset=dataset,
            parent_version=None,
            tags={"gate_verdict": "shipped", "gate_reason": "shipped with catdog"},
        )

    def _log_run(
        self,
        model_dir: Path,
        *,
        source: str,
        params: dict[str, Any],
        history: list[dict[str, Any]],
        test_metrics: dict[str, Any],
        dataset: dict[str, Any],
        parent_version: int | None,
        tags: dict[str, str],
    ) -> ModelVersionInfo:
        from catdog.ml.predictor import model_version

        config = _read_json(model_dir / "model_config.json")
        backbone = str(config.get("backbone") or params.get("backbone") or "")
        content_id = model_version(model_dir, backbone)
        run_name = f"{source}-{content_id}"
        self._ensure_registered_model()
        experiment = self._experiment()
        with _mlflow_errors():
            run = self.client.create_run(
                experiment,
                run_name=run_name,
                tags={"catdog.source": source, "catdog.model_version": content_id, "mlflow.source.name": "catdog"},
            )
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [
                Metric(key, value, now, int(row.get("epoch", step)))
                for step, row in enumerate(history, start=1)
                for key, value in _numbers(row, skip=("epoch",))
            ]
            metrics += [Metric(f"test_{key}", value, now, 0) for key, value in _numbers(test_metrics)]
            int8 = model_dir / "metrics_int8.json"
            if int8.is_file():
                metrics += [Metric(f"test_int8_{key}", value, now, 0) for key, value in _numbers(_read_json(int8))]
            flat = [Param(key, value) for key, value in _flatten(params)]
            with _mlflow_errors():
                for chunk in _chunks(flat, 100):
                    self.client.log_batch(run_id, params=chunk)
                for metric_chunk in _chunks(metrics, 1000):
                    self.client.log_batch(run_id, metrics=metric_chunk)
                self.client.log_batch(run_id, tags=[RunTag("catdog.backbone", backbone)])
                self.client.log_inputs(run_id, datasets=[_dataset_input(dataset)])
                self.client.log_artifacts(run_id, str(model_dir), artifact_path=MODEL_ARTIFACT_PATH)
                plots = sorted(p.name for p in (model_dir / "plots").glob("*.png"))
                version_tags = {
                    "model_version": content_id,
                    "backbone": backbone,
                    "source": source,
                    "data_digest": str(dataset.get("digest") or ""),
                    "data_counts": json.dumps(_class_counts(dataset.get("counts") or {})),
                    "data_uploads": str(int(dataset.get("uploads") or 0)),
                    "plots": ",".join(plots),
                    "run_name": run_name,
                }
                if parent_version is not None:
                    version_tags["parent_version"] = str(int(parent_version))
                version_tags.update({key: str(value) for key, value in tags.items()})
                created = self.client.create_model_version(
                    self.name,
                    f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}",
                    run_id=run_id,
                    tags=version_tags,
                    description=f"{content_id} ({source})",
                )
                self.client.set_terminated(run_id, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, "FAILED")
            raise
        log.info("registered %s as version %s (run %s)", content_id, created.version, run_id)
        return self.get(int(created.version))

    def _test_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        if run_id not in self._run_metrics:  # a finished run's metrics do not change: ask once
            with _mlflow_errors():
                try:
                    run = self.client.get_run(run_id)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    return {}
            self._run_metrics[run_id] = dict(run.data.metrics)
        return self._run_metrics[run_id]

    def _info(self, mv: ModelVersion, aliases: dict[str, int]) -> ModelVersionInfo:
        version = int(mv.version)
        tags = dict(mv.tags or {})
        logged = self._test_metrics(mv.run_id)
        return ModelVersionInfo(
            version=version,
            model_version=tags.get("model_version", ""),
            backbone=tags.get("backbone", ""),
            model_dir=_local_path(mv.source or "") or self._cache_dir(version),
            aliases=tuple(sorted(alias for alias, v in aliases.items() if v == version)),
            created_at=iso_utc(mv.creation_timestamp / 1000) if mv.creation_timestamp else "",
            run_id=mv.run_id or None,
            source=tags.get("source", "train"),
            metrics={key: logged.get(f"test_{key}") for key in METRIC_KEYS},
            tags=tags,
        )

    def _cache_dir(self, version: int) -> Path:
        return self.settings.state_dir / "registry-cache" / str(version)

    def _download(self, version: int, uri: str) -> Path:
        target = self._cache_dir(version)
        marker = target / CACHE_MARKER
        if marker.is_file() and marker.read_text() == uri:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            with _mlflow_errors():
                fetched = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=uri, dst_path=str(scratch), tracking_uri=self.tracking_uri
                    )
                )
            (fetched / CACHE_MARKER).write_text(uri)
            if target.exists():  # a stale copy (another store's version of that number): move it aside first
                stale = Path(tempfile.mkdtemp(prefix=f".{version}-stale-", dir=target.parent))
                with contextlib.suppress(FileNotFoundError):
                    target.rename(stale / "model")
            try:
                fetched.rename(target)
            except OSError:  # another process renamed its copy into place first
                if not (marker.is_file() and marker.read_text() == uri):
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            for stale in target.parent.glob(f".{version}-stale-*"):
                shutil.rmtree(stale, ignore_errors=True)
        return target


# --- helpers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) on `path`, held for the block; blocks until it is free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _mlflow_errors() -> Iterator[None]:
    """MlflowException -> RegistryError with one line (UnknownVersion and the like pass through)."""
    try:
        yield
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE"):
            raise  # callers that expect these look at error_code
        raise RegistryError(f"MLflow: {_message(exc)}") from None


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other URIs and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


def _local_path(uri: str) -> Path | None:
    """The local folder of a file:// URI or a plain path; None for a remote URI (s3://, mlflow-artifacts: ...)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def _history_of(tags: dict[str, str]) -> list[int]:
    """The production history (oldest first) from the registered model's tags; [] when absent or unreadable."""
    try:
        return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except (ValueError, TypeError):
        return []


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _numbers(row: dict[str, Any], skip: Sequence[str] = ()) -> Iterator[tuple[str, float]]:
    """The finite plain numbers of a dict (no bools, no nested values)."""
    for key, value in row.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            yield str(key), float(value)


def _flatten(params: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Nested dicts -> dotted keys; lists and other values as text (JSON for lists)."""
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, prefix=f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, json.dumps(list(value), default=str)[:6000]
        else:
            yield name, str(value)[:6000]


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _class_counts(counts: dict[str, Any]) -> dict[str, int]:
    """{"cat": 4000, "dog": 4005} or {"cats": ..., "dogs": ...} -> {"cats": 4000, "dogs": 4005}."""
    out: dict[str, int] = {}
    for key, value in counts.items():
        name = key if key.endswith("s") else f"{key}s"
        out[name] = int(value)
    return out


def _dataset_input(dataset: dict[str, Any]) -> DatasetInput:
    """The run's training data as an MLflow dataset input (context "training"): no data, its metadata."""
    digest = str(dataset.get("digest") or "")
    profile = {
        "fingerprint": digest,
        "counts": _class_counts(dataset.get("counts") or {}),
        "uploads": int(dataset.get("uploads") or 0),
    }
    entity = Dataset(
        name=str(dataset.get("name") or "train"),
        digest=(digest or "unknown")[:DATASET_DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": str(dataset.get("root") or "")}),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset=entity, tags=[InputTag("mlflow.data.context", "training")])
