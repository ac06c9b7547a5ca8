"""Retraining: job progress and liveness columns, uploads, feedback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("retrain_jobs") as batch:
        batch.add_column(sa.Column("active_slot", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("phase", sa.String(16), nullable=False, server_default="queued"))
        batch.add_column(sa.Column("phase_detail", sa.String(128), nullable=True))
        batch.add_column(sa.Column("percent", sa.Float(), nullable=True))
        batch.add_column(sa.Column("eta_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(128), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("result", sa.JSON(), nullable=True))
        batch.create_unique_constraint(op.f("uq_retrain_jobs_active_slot"), ["active_slot"])

    op.create_table(
        "uploads",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("class_name", sa.String(8), nullable=False),
        sa.Column("suffix", sa.String(8), nullable=False),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_uploads")),
    )
    op.create_index(op.f("ix_uploads_class_name"), "uploads", ["class_name"])
    op.create_index(op.f("ix_uploads_created_at"), "uploads", ["created_at"])

    op.create_table(
        "feedback",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prediction_id", sa.String(36), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("predicted_class", sa.String(8), nullable=False),
        sa.Column("correct_label", sa.String(8), nullable=False),
        sa.Column("upload_sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_created_at"), "feedback", ["created_at"])
    op.create_index(op.f("ix_feedback_prediction_id"), "feedback", ["prediction_id"])
    op.create_index(op.f("ix_feedback_model_version"), "feedback", ["model_version"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("uploads")
    with op.batch_alter_table("retrain_jobs") as batch:
        batch.drop_constraint(op.f("uq_retrain_jobs_active_slot"), type_="unique")
        for column in (
            "result",
            "params",
            "cancel_requested",
            "worker",
            "heartbeat_at",
            "eta_seconds",
            "percent",
            "phase_detail",
            "phase",
            "active_slot",
        ):
            batch.drop_column(column)
