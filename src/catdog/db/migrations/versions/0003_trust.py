"""Trust in retraining data: upload label checks and quarantine, feedback per picture and client.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        # the served model's verdict at upload time
        batch.add_column(sa.Column("predicted_class", sa.String(8), nullable=True))
        batch.add_column(sa.Column("p_label", sa.Float(), nullable=True))
        # the retrain's label check (confident learning on out-of-sample probabilities)
        batch.add_column(sa.Column("quarantined", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("quarantine_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("label_p", sa.Float(), nullable=True))
        batch.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("kept_by_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index(op.f("ix_uploads_quarantined"), ["quarantined"])
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("content_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch.create_index(op.f("ix_feedback_content_sha256"), ["content_sha256"])
    # feedback given before this revision: its picture from the prediction it judged
    op.execute(
        "UPDATE feedback SET content_sha256 = "
        "(SELECT predictions.content_sha256 FROM predictions WHERE predictions.id = feedback.prediction_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_index(op.f("ix_feedback_content_sha256"))
        batch.drop_column("client")
        batch.drop_column("content_sha256")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_index(op.f("ix_uploads_quarantined"))
        for column in ("kept_by_admin", "checked_at", "label_p", "quarantine_reason", "quarantined"):
            batch.drop_column(column)
        batch.drop_column("p_label")
        batch.drop_column("predicted_class")
