"""fetch_runs.clock_offset_seconds: how far the API's clock was from this machine's, so that
status can warn of a clock that makes actions run late or early

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fetch_runs") as batch:
        batch.add_column(sa.Column("clock_offset_seconds", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fetch_runs") as batch:
        batch.drop_column("clock_offset_seconds")
