"""Indexes for the status check's and the metrics' counts, which scanned every action ever taken

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FAILED = sa.text("outcome = 'failed'")


def upgrade() -> None:
    op.create_index("ix_actions_state_finished_at", "actions", ["state", "finished_at"])
    op.create_index(
        "ix_action_attempts_failed",
        "action_attempts",
        ["action_id"],
        sqlite_where=FAILED,
        postgresql_where=FAILED,
    )


def downgrade() -> None:
    op.drop_index("ix_action_attempts_failed", "action_attempts")
    op.drop_index("ix_actions_state_finished_at", "actions")
