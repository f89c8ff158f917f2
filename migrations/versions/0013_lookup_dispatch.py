"""fetch_runs.dispatch_id: the dispatch a lookup asked for, so that a listing older than a lookup
is superseded for that dispatch alone, not as a whole

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("fetch_runs", sa.Column("dispatch_id", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("fetch_runs", "dispatch_id")  # in place (SQLite 3.35 and newer)
