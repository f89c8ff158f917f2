"""notifications of what `etl status` finds, not of an event: a site under-delivering, the status
turning CRITICAL and back to OK. Such a notice has a `subject` (its key) instead of an event;
notifier_state keeps the last verdict told.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)  # as the models' UTCDateTime is in the database
WAITING = sa.text("sent_at IS NULL")
# the values as of this revision: a later vocabulary is a later revision
KINDS = (
    "dispatch_created", "dispatch_moved", "dispatch_cancelled", "dispatch_vanished",
    "action_failed", "action_missed",
)  # fmt: skip
NEW_KINDS = (*KINDS, "under_delivered", "status_critical", "status_ok")


def kinds(values: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(k) for k in values)})"


def revision_0020() -> sa.Table:
    """The table as 0020 made it: what SQLite copies from (it changes a table by copying it)."""
    return sa.Table(
        "notifications",
        sa.MetaData(),
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
        sa.CheckConstraint(kinds(KINDS), name="ck_notifications_kind"),
        sa.UniqueConstraint("event_id"),
    )


def upgrade() -> None:
    op.drop_index("ix_notifications_waiting", "notifications")
    with op.batch_alter_table("notifications", copy_from=revision_0020()) as table:
        table.alter_column("event_id", existing_type=sa.Integer(), nullable=True)
        table.add_column(sa.Column("subject", sa.String(), nullable=True))
        table.create_unique_constraint("uq_notifications_subject", ["subject"])
        table.drop_constraint(op.f("ck_notifications_kind"), type_="check")
        table.create_check_constraint(op.f("ck_notifications_kind"), kinds(NEW_KINDS))
        table.create_check_constraint(
            op.f("ck_notifications_source"), "(event_id IS NULL) <> (subject IS NULL)"
        )
    waiting_index()
    op.add_column("notifier_state", sa.Column("health_told", sa.String(10), nullable=True))


def downgrade() -> None:
    op.drop_column("notifier_state", "health_told")
    # the notices of no event cannot be kept without one
    op.execute("DELETE FROM notifications WHERE event_id IS NULL")
    op.drop_index("ix_notifications_waiting", "notifications")
    with op.batch_alter_table("notifications") as table:
        table.drop_constraint(op.f("ck_notifications_source"), type_="check")
        table.drop_constraint(op.f("ck_notifications_kind"), type_="check")
        table.create_check_constraint(op.f("ck_notifications_kind"), kinds(KINDS))
        table.drop_constraint("uq_notifications_subject", type_="unique")
        table.drop_column("subject")
        table.alter_column("event_id", existing_type=sa.Integer(), nullable=False)
    waiting_index()


def waiting_index() -> None:
    """Made again after the table changed (SQLite copies it)."""
    op.create_index(
        "ix_notifications_waiting",
        "notifications",
        ["next_attempt_at"],
        sqlite_where=WAITING,
        postgresql_where=WAITING,
    )
