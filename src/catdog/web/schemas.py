"""The API's answers as pydantic models (`response_model=` on the routes): what /openapi.json documents.

Field names are the JSON names clients read (the spec's pages, the load test, scripts); a name
that is a Python keyword has an alias (`class_` is "class"). Validation is lax, as FastAPI's
response validation is: the models document and check shapes, ranges are in the descriptions.
Timestamps are ISO 8601 UTC strings ending in "Z"; probabilities are fractions in [0, 1].

The routes still return plain dicts (FastAPI validates them against these models, then
serializes); /api/predict, /api/predict/batch and /api/models use `response_model_exclude_unset=True`,
so a field the dict leaves out stays out (`explanation` unless asked for; a gate check stored
without `skipped`) while every field the dict has is there, null included.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class _Answer(BaseModel):
    # populate_by_name: code may build an answer with the Python names (class_=...) as well as the JSON ones
    model_config = ConfigDict(populate_by_name=True)


# --- predictions -----------------------------------------------------------------------------------
class PredictionAnswer(_Answer):
    """One image's prediction (POST /api/predict, and each successful entry of a batch)."""

    prediction_id: str = Field(description="32 hex digits; for GET /api/explain/{prediction_id} and POST /api/feedback")
    filename: str | None = Field(description="the uploaded file's name as the client sent it; null when none was")
    predicted_class: str = Field(description='"cat" or "dog"')
    class_: str = Field(alias="class", description='the class\'s folder name: "cats" or "dogs"')
    class_index: int = Field(description="0 for cat, 1 for dog")
    probability: float = Field(description="P(dog), in [0, 1]")
    confidence: float = Field(description="the probability of the predicted class, in [0.5, 1]")
    confidence_percentage: str = Field(description='`confidence` as a percentage with two decimals, e.g. "97.31%"')
    is_pet: bool | None = Field(description="whether the picture shows a cat or a dog at all; null without a pet gate")
    pet_score: float | None = Field(description="P(a cat or a dog at all), in [0, 1]; null without a pet gate")
    is_valid: bool = Field(description="false when the pet gate says the picture shows no cat or dog")
    message: str | None = Field(description="why the prediction is not valid; null when it is")
    model_version: str = Field(description='the served weights\' content id, e.g. "vgg16-a5ebe190"')
    registry_version: int | None = Field(
        description="the model registry's version number of the model that answered; null for a pinned model folder"
    )
    precision: str = Field(description='the graph that ran: "fp32" or "int8"')
    cached: bool = Field(description="answered from the prediction cache (the same bytes, the same model version)")
    explanation_url: str = Field(description="the Grad-CAM heat map over the photo (PNG), while the server keeps it")
    prediction_time: float = Field(description="seconds from the upload's bytes to this answer (decoding included)")
    timestamp: str = Field(description="when it was answered, ISO 8601 UTC with milliseconds")
    explanation: str | None = Field(
        default=None,
        description="only with ?explain=true: the heat map as a PNG data URL (data:image/png;base64,...); "
        "null when it is no longer kept",
    )


class PredictionErrorEntry(_Answer):
    """A batch entry for a file that could not be predicted (the other files still are)."""

    filename: str | None = Field(description="the file's name as the client sent it")
    error: str = Field(description="why, in one sentence")
    status_code: int = Field(description="what POST /api/predict would answer: 413 too large, 415 no image")


def _entry_kind(entry: Any) -> str:
    """Which model a batch entry is: an error entry has `error` (one dict lookup, not a try of each model)."""
    has_error = "error" in entry if isinstance(entry, dict) else isinstance(entry, PredictionErrorEntry)
    return "error" if has_error else "prediction"


BatchEntry = Annotated[
    Annotated[PredictionAnswer, Tag("prediction")] | Annotated[PredictionErrorEntry, Tag("error")],
    Discriminator(_entry_kind),
]


class BatchAnswer(_Answer):
    """POST /api/predict/batch: one entry per file, in the order sent."""

    predictions: list[BatchEntry] = Field(
        description="a prediction, or an error entry ({filename, error, status_code}) for a file that failed"
    )
    count: int = Field(description="files sent (entries)")
    succeeded: int = Field(description="entries that are predictions")
    failed: int = Field(description="entries that are errors")


# --- status ----------------------------------------------------------------------------------------
class HealthAnswer(_Answer):
    """GET /health: the process answers (liveness)."""

    status: str = Field(description='always "ok"')
    instance: str = Field(description='this process, "hostname:pid" (tells replicas apart)')
    timestamp: str = Field(description="ISO 8601 UTC, seconds")


class ReadyAnswer(_Answer):
    """GET /ready: 200 once the model is loaded and warmed up, 503 (the same body) until then."""

    ready: bool = Field(description="whether predictions are served")
    phase: str = Field(description="starting, loading, warming, ready or failed")
    timestamp: str = Field(description="ISO 8601 UTC, seconds")
    error: str | None = Field(default=None, description="only when loading failed: why")


class BatchingSettings(_Answer):
    max_batch_size: int = Field(description="images per model run at most (CATDOG_MAX_BATCH_SIZE)")
    max_batch_wait_ms: float = Field(description="how long a run waits for its batch to fill, ms")
    max_queue_size: int = Field(description="images admitted at once at most; past it the answer is 503")


class CpuDescription(_Answer):
    model: str = Field(description="the CPU's model name")
    architecture: str = Field(description='e.g. "x86_64"')
    logical_cores: int = Field(description="logical cores the OS reports")
    flags: list[str] = Field(description="the relevant instruction set flags present (avx2, avx512_vnni, ...)")
    int8_dot_product: bool = Field(description="whether int8 graphs run fast here (VNNI or similar)")
    auto_precision: str = Field(description='how CATDOG_PRECISION="auto" chooses on this CPU')


class WriteError(_Answer):
    what: str = Field(description='what failed, e.g. "POST /api/upload-training-data"')
    error: str = Field(description="the error's first line, the state folder named STATE")
    at: str = Field(description="ISO 8601 UTC, seconds")


class DiskStatus(_Answer):
    free_bytes: int | None = Field(description="bytes free for the server in the state folder; null when unknown")
    total_bytes: int | None = Field(description="the file system's size, bytes; null when unknown")
    full: bool = Field(description="less than 1 MiB free, or a write failed for want of space and too little was freed")
    last_write_error: WriteError | None = Field(description="the latest write that failed for want of space")


class StatusAnswer(_Answer):
    """GET /api/status: the system's state, uptime and counters (from the database)."""

    status: str = Field(description='"healthy" when the model serves, else its phase (loading, warming, failed)')
    instance: str = Field(description='this process, "hostname:pid"')
    model_loaded: bool = Field(description="whether predictions are served")
    uptime: str = Field(description='since the process started, e.g. "1h 2m 3s"')
    uptime_seconds: float = Field(description="since the process started, seconds (one decimal)")
    total_predictions: int = Field(description="predictions recorded in the database (every replica's)")
    total_retrains: int = Field(description="retraining jobs that succeeded")
    is_retraining: bool = Field(description="whether a retraining job is queued or running")
    model_version: str | None = Field(description="the production model's content id; null while loading")
    registry_version: int | None = Field(description="the production model's registry version; null when pinned")
    backbone: str | None = Field(description='e.g. "vgg16"; null while loading')
    precision: str | None = Field(description='"fp32" or "int8"; null while loading')
    model_dir: str | None = Field(
        description='where the model comes from, without server paths: "models:/catdog/3" or "pinned:<folder>"'
    )
    has_metrics: bool = Field(description="whether GET /api/metrics has the served model's evaluation")
    queue_depth: int = Field(description="images admitted and not yet answered by this process")
    batching: BatchingSettings
    cpu: CpuDescription
    disk: DiskStatus | None = Field(description="the state folder's disk; null when not watched")
    timestamp: str = Field(description="ISO 8601 UTC, seconds")


# --- the model registry ----------------------------------------------------------------------------
class VersionMetrics(_Answer):
    """The version's test-split metrics (fractions in [0, 1], log_loss in nats); null where not logged."""

    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    log_loss: float | None
    n: int | None = Field(description="test images")


class GateCheck(_Answer):
    """One promotion gate check, with its own figures beside these fields."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description='"production", "mcnemar", "reference" or "floor"')
    passed: bool
    skipped: bool = Field(default=False, description="the check could not run (it then passes)")
    detail: str = Field(default="", description="one line with the figures")


class GateVerdict(_Answer):
    verdict: str | None = Field(description="the promotion gate's verdict on this version; null when it never ran")
    reason: str | None = Field(description="one line with the figures")
    checks: list[GateCheck] = Field(description="each check; [] when the gate never ran")


class VersionData(_Answer):
    digest: str | None = Field(description="the training data's fingerprint")
    counts: dict[str, int] = Field(description='training images per class, e.g. {"cats": 4000, "dogs": 4005}')
    uploads: int = Field(description="how many of them were training uploads")


class LoadError(_Answer):
    """Why an alias does not serve the version it names on this server (the previous model still serves)."""

    alias: str | None = Field(description='"production" or "staging"; null when the registry could not be asked')
    version: int | None = Field(description="the registry version that failed to load; null as for alias")
    reason: str = Field(description="one line, without server paths")
    at: str = Field(description="the latest try, ISO 8601 UTC")
    retry_in_seconds: float | None = Field(description="seconds until the next try; null as for alias")


class ModelVersionEntry(_Answer):
    """One registered model version (catdog.registry.ModelVersionInfo.to_dict) and this server's load error."""

    version: int = Field(description="the registry's version number (1, 2, ...)")
    model_version: str = Field(description='the weights\' content id, e.g. "vgg16-a5ebe190"')
    backbone: str
    aliases: list[str] = Field(description='"production" and/or "staging"')
    created_at: str = Field(description="ISO 8601 UTC")
    source: str = Field(description='"shipped", "train" or "retrain"')
    metrics: VersionMetrics
    gate: GateVerdict
    parent_version: int | None = Field(description="the version it was retrained from")
    run_id: str | None = Field(description="the MLflow run that trained it")
    data: VersionData
    plots: dict[str, str] = Field(description="plot name -> URL of the PNG (GET /api/models/{version}/plots/{file})")
    load_error: LoadError | None = Field(description="why this server failed to load it; null when it did not fail")


class GateReferenceEntry(_Answer):
    version: int | None = Field(description="the reference version; null before any production")
    source: str = Field(description='"setting", "first production", "admin (API)", "admin (CLI)" or "production"')
    set_at: str | None = Field(description="when it was stored, ISO 8601 UTC; null when not stored")


class ServedModel(_Answer):
    version: int | None = Field(description="the registry version; null for a pinned model folder")
    model_version: str = Field(description="the weights' content id")


class ServedModels(_Answer):
    production: ServedModel | None
    staging: ServedModel | None


class ModelsAnswer(_Answer):
    """GET /api/models: the registered versions, newest first, and what this server process serves."""

    registered_model: str = Field(description="the registered model's name (CATDOG_REGISTERED_MODEL)")
    production: int | None = Field(description="the version the production alias names")
    staging: int | None = Field(description="the version the staging alias names")
    versions: list[ModelVersionEntry]
    reference: GateReferenceEntry = Field(description="the promotion gate's reference version")
    served: ServedModels = Field(description="what this process serves now (each worker process loads on its own)")
    swap_error: LoadError | None = Field(description="the first of swap_errors (production's first); null when none")
    swap_errors: list[LoadError]


class PromoteAnswer(_Answer):
    """POST /api/models/{version}/promote."""

    production: int = Field(description="the production version now")
    previous: int | None = Field(description="the production version before; equal to production when unchanged")


class SkippedVersion(_Answer):
    version: int
    reason: str = Field(description="why it did not load on this server")


class RollbackAnswer(_Answer):
    """POST /api/models/rollback."""

    production: int = Field(description="the production version now")
    rolled_back_from: int = Field(description="the production version before")
    skipped: list[SkippedVersion] = Field(description="versions passed over because they failed to load here")


class ReferenceAnswer(_Answer):
    """POST /api/models/{version}/reference."""

    reference: int = Field(description="the stored reference version now")
    previous: int | None = Field(description="the stored reference before; null when none was stored")
    overridden_by_setting: int | None = Field(
        description="CATDOG_GATE_REFERENCE when set: it wins over the stored reference on this server"
    )
