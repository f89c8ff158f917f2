"""actions and their attempts (the processor's exactly-once record), the planner's state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dispatch_id", sa.String(), sa.ForeignKey("dispatches.id"), nullable=False),
        sa.Column("site_id", sa.String(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("idempotency_key", sa.String(36), nullable=False, unique=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", TIME, nullable=True),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.UniqueConstraint("dispatch_id", "site_id", "kind", name="uq_actions_dispatch_site_kind"),
    )
    op.create_index(
        "ix_actions_open",
        "actions",
        ["state", "available_at"],
        sqlite_where=sa.text("finished_at IS NULL"),
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.create_index("ix_actions_site_id", "actions", ["site_id", "created_at"])
    op.create_table(
        "action_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("action_id", sa.Integer(), sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("action_id", "number", name="uq_action_attempts_number"),
    )

    op.create_table(
        "planner_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("planned_at", TIME, nullable=False),
    )
    op.create_index("ix_dispatches_updated_at", "dispatches", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_dispatches_updated_at", "dispatches")
    op.drop_table("planner_state")
    op.drop_table("action_attempts")
    op.drop_table("actions")
