"""The one settings object: every value comes from a CATDOG_* environment variable (pydantic-settings).

`get_settings()` reads the environment anew on each call, so tests and CLI flags that set a
variable take effect at once. A bad value raises SettingsError with one line naming the
variable, what it got and what it needs; the CLI prints that line and exits 2 at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from catdog.errors import UsageProblem

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "CATDOG_"


class SettingsError(UsageProblem):
    """A CATDOG_* variable holds a value catdog cannot use."""


class Settings(BaseSettings):
    """Where catdog keeps things and how it runs. Field `x` is read from CATDOG_X."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- where things live -------------------------------------------------------------------
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "catdog")
    features_dir_override: Path | None = Field(default=None, validation_alias="CATDOG_FEATURES_DIR")
    data_dir: Path = PROJECT_ROOT / "data"  # the labelled data set: DIR/{train,test}/{cats,dogs}
    state_dir: Path = PROJECT_ROOT / "state"  # the platform's own files: database, explanations, metrics
    models_dir: Path = PROJECT_ROOT / "models"
    default_model: str = "vgg16"  # the shipped model a fresh registry makes production
    pinned_model: Path | None = None  # serve exactly this model directory; unset: the registry's production
    database_url: str | None = None  # default: SQLite in state_dir
    # Prometheus samples of this server's processes, emptied at each start; default STATE/prometheus.
    # Give each server its own (replicas sharing a state folder: a folder inside the container).
    metrics_dir: Path | None = None

    # --- inference -----------------------------------------------------------------------------
    threads: int = Field(default=0, ge=0)  # ONNX Runtime intra-op threads; 0 = every core
    precision: Literal["auto", "fp32", "int8"] = "auto"  # auto: int8 where the CPU has int8 dot products

    # --- the web service -----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_batch_size: int = Field(default=16, ge=1, le=256)  # images per ONNX Runtime run
    max_batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)  # how long a batch waits to fill
    max_queue_size: int = Field(default=64, ge=1)  # images waiting or decoding; past it: 503
    decode_threads: int = Field(default=2, ge=1, le=64)
    # whether the serving graph's idle ONNX Runtime threads spin between runs (True) or sleep at
    # once and leave the cores to decoding (False): README "Serving that holds under load"
    inference_spinning: bool = True
    warmup_batch_sizes: str = "all"  # "all" (1..max_batch_size) or a list such as "1,16"
    prediction_cache_size: int = Field(default=4096, ge=0)  # entries; 0 turns the cache off
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_batch_files: int = Field(default=32, ge=1)  # files in one /api/predict/batch; at most max_queue_size
    explanations_kept: int = Field(default=2000, ge=0)
    db_flush_seconds: float = Field(default=0.5, gt=0, le=60)
    drift_window: int = Field(default=500, ge=20)  # recent predictions compared with the reference
    drift_min_samples: int = Field(default=50, ge=10)
    drift_interval_seconds: float = Field(default=60.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    admin_token: str | None = None  # Bearer token of the admin routes; default: generated into state_dir
    mode: Literal["development", "production"] = "development"  # production refuses to start without a token

    # --- the model registry (MLflow) -------------------------------------------------------------
    mlflow_tracking_uri: str | None = None  # default: SQLite in state_dir (the registry shares it)
    mlflow_artifact_root: str | None = None  # default: state_dir/mlartifacts; s3://... at scale
    registered_model: str = "catdog"  # the registered model whose versions are served
    experiment: str = "catdog"  # the MLflow experiment of training runs
    registry_poll_seconds: float = Field(default=2.0, gt=0, le=300)  # how often servers look at the aliases
    gate_tolerance: float = Field(default=0.005, ge=0, le=1)  # accuracy a new version may lose and still promote
    # The gate's reference version (b): a new version must stay within gate_tolerance of it too.
    # Unset: the first version that was ever production. An admin may move it to a better one.
    gate_reference: int | None = Field(default=None, ge=1)
    gate_min_accuracy: float = Field(default=0.90, ge=0, le=1)  # (c) the absolute floor on test accuracy
    gate_mcnemar_alpha: float = Field(default=0.05, gt=0, lt=1)  # (a) McNemar's exact test: significantly worse
    ab_staging_share: float = Field(default=0.0, ge=0, le=1)  # share of predictions answered by staging

    # --- jobs (Huey) ---------------------------------------------------------------------------------
    queue_url: str | None = None  # default: SQLite in state_dir; redis://... or postgresql://... across machines
    worker: bool = True  # `catdog serve` starts a job consumer beside the web server
    worker_nice: int = Field(default=10, ge=0, le=19)  # the consumer's CPU priority: serving comes first
    job_heartbeat_seconds: float = Field(default=5.0, gt=0)
    job_stale_seconds: float = Field(default=60.0, gt=0)  # a running job without a heartbeat this long: failed
    retrain_min_per_class: int = Field(default=10, ge=1)  # images per class (base + uploads) a retrain needs
    max_upload_files: int = Field(default=256, ge=1)  # files in one upload request
    label_check: bool = True  # a retrain quarantines uploads whose label looks wrong (confident learning)
    label_check_folds: int = Field(default=5, ge=2, le=20)  # K of the K-fold out-of-sample probabilities
    warm_features: bool = True  # an idle worker fills the feature cache of the base set and test split

    # --- abuse limits ------------------------------------------------------------------------------
    # Feedback per client address, in the `limits` notation ("30/minute", "5/second;100/hour"); "" = off.
    feedback_rate_limit: str = "30/minute"
    # Addresses whose X-Forwarded-For is believed (the compose nginx); "*" trusts any, "" none.
    trusted_proxies: str = "127.0.0.1"

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _sizes(cls, value: str) -> str:
        if value.strip().lower() != "all":
            try:
                sizes = [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError("must be 'all' or comma-separated batch sizes such as 1,16") from None
            if not sizes or min(sizes) < 1:
                raise ValueError("must be 'all' or comma-separated batch sizes of at least 1")
        return value

    @field_validator("feedback_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many  # here: the CLI's other commands need no `limits`

            try:
                rates = parse_many(value)
            except ValueError:
                raise ValueError("must be a rate such as 30/minute or 5/second;100/hour, or empty (no limit)") from None
            if any(rate.amount < 1 for rate in rates):
                raise ValueError("a rate of 0 refuses every feedback: give at least 1, or empty for no limit")
        return value

    @field_validator("gate_reference", mode="before")
    @classmethod
    def _version_digits(cls, value: object) -> object:
        """A version number in plain digits, as the API's paths take them ("1.0", "+2", "2_0" are refused)."""
        if isinstance(value, str) and value.strip() and not (value.strip().isascii() and value.strip().isdigit()):
            raise ValueError("must be a version number in plain digits, such as 3")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        """Either *, or comma-separated addresses and CIDR networks (as uvicorn's ProxyHeadersMiddleware reads them)."""
        import ipaddress

        if value.strip() != "*":
            for part in filter(None, (p.strip() for p in value.split(","))):
                try:
                    ipaddress.ip_network(part)  # an address is a network of one
                except ValueError:
                    why = f"{part!r} is not an address or network: use e.g. 127.0.0.1,10.0.0.0/8, or *"
                    raise ValueError(why) from None
        return value

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> Settings:
        for name, value in (
            ("CATDOG_MAX_BATCH_SIZE", self.max_batch_size),
            ("CATDOG_MAX_BATCH_FILES", self.max_batch_files),
        ):
            if self.max_queue_size < value:  # else such a batch could never be admitted
                raise ValueError(f"CATDOG_MAX_QUEUE_SIZE ({self.max_queue_size}) must be at least {name} ({value})")
        return self

    # --- derived ---------------------------------------------------------------------------------
    @property
    def weights_dir(self) -> Path:
        return self.cache_dir / "weights"

    @property
    def features_dir(self) -> Path:
        return self.features_dir_override or self.cache_dir / "features"

    @property
    def default_model_dir(self) -> Path:
        return self.models_dir / self.default_model

    @property
    def prometheus_dir(self) -> Path:
        return self.metrics_dir or self.state_dir / "prometheus"

    @property
    def uploads_dir(self) -> Path:
        return self.state_dir / "uploads"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.state_dir / "mlartifacts").resolve().as_uri()

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "admin_token"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'catdog.sqlite'}"

    def warmup_sizes(self) -> list[int]:
        """Batch sizes to run once before /ready: every size up to max_batch_size unless narrowed."""
        if self.warmup_batch_sizes.strip().lower() == "all":
            return list(range(1, self.max_batch_size + 1))
        sizes = {int(part) for part in self.warmup_batch_sizes.split(",") if part.strip()}
        return sorted(min(size, self.max_batch_size) for size in sizes)


def get_settings() -> Settings:
    """The settings from the current environment; SettingsError (one line) on a bad value."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ()) if part]
    name = ENV_PREFIX + location[0].upper() if location else "a CATDOG_* variable"
    got = f" (got {error['input']!r})" if location and not isinstance(error.get("input"), dict) else ""
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f"; and {len(exc.errors()) - 1} more" if len(exc.errors()) > 1 else ""
    return f"invalid setting {name}{got}: {message}{more}"
