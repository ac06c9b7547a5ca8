"""Initial tables: predictions, retrain_jobs, drift_reports.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("precision", sa.String(8), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("predicted_class", sa.String(8), nullable=False),
        sa.Column("p_dog", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("is_pet", sa.Boolean(), nullable=True),
        sa.Column("pet_score", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    op.create_index(op.f("ix_predictions_created_at"), "predictions", ["created_at"])
    op.create_index("ix_predictions_model_version_created_at", "predictions", ["model_version", "created_at"])

    op.create_table(
        "retrain_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrain_jobs")),
    )
    op.create_index(op.f("ix_retrain_jobs_status"), "retrain_jobs", ["status"])
    op.create_index(op.f("ix_retrain_jobs_created_at"), "retrain_jobs", ["created_at"])

    op.create_table(
        "drift_reports",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("window_size", sa.Integer(), nullable=False),
        sa.Column("ks_statistic", sa.Float(), nullable=False),
        sa.Column("ks_p_value", sa.Float(), nullable=False),
        sa.Column("psi", sa.Float(), nullable=False),
        sa.Column("prediction_drift", sa.Boolean(), nullable=False),
        sa.Column("domain_auc", sa.Float(), nullable=True),
        sa.Column("domain_threshold", sa.Float(), nullable=True),
        sa.Column("feature_drift", sa.Boolean(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_reports")),
    )
    op.create_index(op.f("ix_drift_reports_created_at"), "drift_reports", ["created_at"])


def downgrade() -> None:
    op.drop_table("drift_reports")
    op.drop_table("retrain_jobs")
    op.drop_table("predictions")
