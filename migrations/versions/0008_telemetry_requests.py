"""telemetry_requests: when each dispatch site's telemetry window was last asked for, and how often

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry_requests",
        sa.Column("dispatch_id", sa.String(), sa.ForeignKey("dispatches.id"), primary_key=True),
        sa.Column("site_id", sa.String(), sa.ForeignKey("sites.id"), primary_key=True),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("asks", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("telemetry_requests")
