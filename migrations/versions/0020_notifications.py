"""notifications and notifier_state: messages to people (ETL_NOTIFY_URLS), each planned once from
an event of the log and kept until a notification service took it, and how far the notifier has
read the log (from its end at this upgrade: a store does not tell of its past)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)  # as the models' UTCDateTime is in the database
WAITING = sa.text("sent_at IS NULL")
# the values as of this revision: a later vocabulary is a later revision
KINDS = (
    "dispatch_created", "dispatch_moved", "dispatch_cancelled", "dispatch_vanished",
    "action_failed", "action_missed",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.Integer(), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("dispatch_id", sa.String(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in KINDS)})", name="kind"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_notifications_waiting",
        "notifications",
        ["next_attempt_at"],
        sqlite_where=WAITING,
        postgresql_where=WAITING,
    )
    op.create_table(
        "notifier_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
    )
    # one statement, so that `etl db upgrade --sql` can write it too
    op.execute(
        "INSERT INTO notifier_state (id, last_event_id) SELECT 1, coalesce(max(id), 0) FROM events"
    )


def downgrade() -> None:
    op.drop_table("notifier_state")
    op.drop_index("ix_notifications_waiting", "notifications")
    op.drop_table("notifications")
