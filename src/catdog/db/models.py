"""The tables as SQLAlchemy 2 typed declarative models. Tables are created only by the Alembic migrations.

Every time is a timezone-aware UTC datetime, in and out, on SQLite as on PostgreSQL (`UTCDateTime`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint and index names, so that later migrations can name what they change.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh primary key: a uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; read back as UTC on every database.

    A naive datetime is refused (ValueError): catdog never guesses a time zone. SQLite keeps the UTC
    wall time as text; PostgreSQL keeps `timestamp with time zone`.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base; its metadata is what Alembic compares with the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Prediction(Base):
    """One served prediction (one image), recorded off the request path by `PredictionWriter`."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_model_version_created_at", "model_version", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid hex, made by the caller
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    precision: Mapped[str] = mapped_column(String(8))  # "fp32" | "int8"
    endpoint: Mapped[str] = mapped_column(String(16))  # "predict" | "batch"
    predicted_class: Mapped[str] = mapped_column(String(8))  # "cat" | "dog"
    p_dog: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)  # probability of the predicted class
    is_pet: Mapped[bool | None] = mapped_column()  # None: the model has no pet gate
    pet_score: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)  # server time for this prediction, ms
    cached: Mapped[bool] = mapped_column()
    batch_size: Mapped[int | None] = mapped_column(Integer)  # images in its ONNX Runtime run; None when cached
    content_sha256: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))


class RetrainStatus(StrEnum):
    """The states of a retraining job; queued and running count as retraining."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_RETRAIN_STATUSES = (RetrainStatus.QUEUED.value, RetrainStatus.RUNNING.value)
FINISHED_RETRAIN_STATUSES = (RetrainStatus.SUCCEEDED.value, RetrainStatus.FAILED.value, RetrainStatus.CANCELLED.value)


class RetrainJob(Base):
    """A retraining job. The row is the job's source of truth: the queue delivers at most once.

    `active_slot` is 1 while the job is queued or running and NULL afterwards; its unique
    constraint lets at most one job be active, on SQLite as on PostgreSQL, without a lock.
    """

    __tablename__ = "retrain_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(16), index=True, default=RetrainStatus.QUEUED.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    active_slot: Mapped[int | None] = mapped_column(Integer, unique=True)  # 1 while active (catdog.db.jobs)
    phase: Mapped[str] = mapped_column(String(16), default="queued")
    phase_detail: Mapped[str | None] = mapped_column(String(128))
    percent: Mapped[float | None] = mapped_column(Float)  # 0..100 over the whole job
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker: Mapped[str | None] = mapped_column(String(128))  # host:pid of the consumer running it
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what was asked (backbone, ...)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # version, metrics, gate, seconds


class UploadSource(StrEnum):
    UPLOAD = "upload"  # sent to /api/upload-training-data
    FEEDBACK = "feedback"  # a corrected prediction an admin added


class Upload(Base):
    """One training image sent by a user, stored once by content at uploads/{class}/{sha256}{suffix}."""

    __tablename__ = "uploads"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(8), index=True)  # "cats" | "dogs"
    suffix: Mapped[str] = mapped_column(String(8))  # ".jpg", ".png", ... by content, never by the client's name
    filename: Mapped[str | None] = mapped_column(String(255))  # the client's name, for display only
    bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), default=UploadSource.UPLOAD.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utcnow)
    # the served model's verdict when it was uploaded: its class and P(the class it was uploaded as)
    predicted_class: Mapped[str | None] = mapped_column(String(8))  # "cat" | "dog"; None: not predicted
    p_label: Mapped[float | None] = mapped_column(Float)
    # the last retrain's label check (confident learning, catdog.ml.label_check)
    quarantined: Mapped[bool] = mapped_column(index=True, default=False)  # True: not trained on
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    label_p: Mapped[float | None] = mapped_column(Float)  # out-of-sample P(its label), K-fold
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kept_by_admin: Mapped[bool] = mapped_column(default=False)  # an admin keeps it: trained on, never quarantined


class Feedback(Base):
    """A user's verdict on one prediction: the label it should have had."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utcnow)
    prediction_id: Mapped[str] = mapped_column(String(36), index=True)
    model_version: Mapped[str] = mapped_column(String(128), index=True)
    predicted_class: Mapped[str] = mapped_column(String(8))  # "cat" | "dog"
    correct_label: Mapped[str] = mapped_column(String(8))  # "cat" | "dog"
    upload_sha256: Mapped[str | None] = mapped_column(String(64))  # set once added to the training uploads
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # the picture judged
    client: Mapped[str | None] = mapped_column(String(64))  # who sent it: the client address (proxy-aware)


class DriftReport(Base):
    """One drift check: recent P(dog) against the reference, and optionally a domain classifier on features."""

    __tablename__ = "drift_reports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utcnow)
    model_version: Mapped[str] = mapped_column(String(128))
    window_size: Mapped[int] = mapped_column(Integer)  # predictions compared with the reference
    ks_statistic: Mapped[float] = mapped_column(Float)
    ks_p_value: Mapped[float] = mapped_column(Float)
    psi: Mapped[float] = mapped_column(Float)
    prediction_drift: Mapped[bool] = mapped_column()
    domain_auc: Mapped[float | None] = mapped_column(Float)
    domain_threshold: Mapped[float | None] = mapped_column(Float)
    feature_drift: Mapped[bool | None] = mapped_column()
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
