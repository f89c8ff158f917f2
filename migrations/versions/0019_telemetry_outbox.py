"""telemetry_outbox and telemetry_outbox_rejected: readings to send to Voltus (`etl telemetry
send`), each kept until Voltus answered 2xx to a request that held it (or refused it alone), and
the lines that could not be queued, with why

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)  # as the models' UTCDateTime is in the database
WAITING = sa.text("sent_at IS NULL AND refused IS NULL")


def upgrade() -> None:
    op.create_table(
        "telemetry_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("endpoint", sa.String(20), nullable=False),
        sa.Column("site_id", sa.String(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("meter_id", sa.String(), nullable=False),
        sa.Column("interval_end", TIME, nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("units", sa.String(3), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("queued_at", TIME, nullable=False),
        sa.Column("sending_until", TIME, nullable=True),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("refused", sa.Text(), nullable=True),
        sa.CheckConstraint("endpoint IN ('telemetry', 'controllable_load')", name="endpoint"),
        sa.CheckConstraint("units IN ('kW', 'kWh')", name="units"),
        sa.UniqueConstraint(
            "endpoint",
            "site_id",
            "meter_id",
            "interval_end",
            "interval_seconds",
            "units",
            name="uq_telemetry_outbox_reading",
        ),
    )
    op.create_index(
        "ix_telemetry_outbox_waiting",
        "telemetry_outbox",
        ["id"],
        sqlite_where=WAITING,
        postgresql_where=WAITING,
    )
    op.create_index("ix_telemetry_outbox_site_end", "telemetry_outbox", ["site_id", "interval_end"])
    op.create_table(
        "telemetry_outbox_rejected",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("line_hash", sa.String(32), nullable=False, unique=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rejected_at", TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("telemetry_outbox_rejected")
    op.drop_index("ix_telemetry_outbox_site_end", "telemetry_outbox")
    op.drop_index("ix_telemetry_outbox_waiting", "telemetry_outbox")
    op.drop_table("telemetry_outbox")
