"""notification_deliveries: which service of ETL_NOTIFY_URLS took which notification, so that a
retry goes only to the services that have not taken it; and notifications.given_up_at: a
notification not taken by every service in time is no longer tried.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)  # as the models' UTCDateTime is in the database


def upgrade() -> None:
    op.add_column("notifications", sa.Column("given_up_at", TIME, nullable=True))
    op.drop_index("ix_notifications_waiting", "notifications")
    waiting_index("sent_at IS NULL AND given_up_at IS NULL")
    op.create_table(
        "notification_deliveries",
        sa.Column(
            "notification_id", sa.Integer(), sa.ForeignKey("notifications.id"), primary_key=True
        ),
        sa.Column("service", sa.String(16), primary_key=True),
        sa.Column("sent_at", TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_deliveries")
    # without given_up_at, one given up would wait again, and be sent long after its news
    op.execute("DELETE FROM notifications WHERE given_up_at IS NOT NULL")
    op.drop_index("ix_notifications_waiting", "notifications")
    op.drop_column("notifications", "given_up_at")
    waiting_index("sent_at IS NULL")


def waiting_index(where: str) -> None:
    op.create_index(
        "ix_notifications_waiting",
        "notifications",
        ["next_attempt_at"],
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )
