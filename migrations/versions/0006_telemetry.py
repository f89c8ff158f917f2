"""telemetry: metered kW per site, meter and interval, and fetches of it

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "telemetry",
        sa.Column("site_id", sa.String(), sa.ForeignKey("sites.id"), primary_key=True),
        sa.Column("meter_id", sa.String(), primary_key=True),
        sa.Column("interval_end", TIME, primary_key=True),
        sa.Column("interval_seconds", sa.Integer(), primary_key=True),
        sa.Column("kw", sa.Double(), nullable=False),
        sa.Column("fetched_at", TIME, nullable=False),
        sa.Column("fetch_run_id", sa.Integer(), sa.ForeignKey("fetch_runs.id"), nullable=False),
    )
    op.create_index("ix_telemetry_site_id_interval_end", "telemetry", ["site_id", "interval_end"])


def downgrade() -> None:
    op.drop_index("ix_telemetry_site_id_interval_end", "telemetry")
    op.drop_table("telemetry")
