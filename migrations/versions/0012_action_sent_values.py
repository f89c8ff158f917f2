"""actions.test and actions.commitment_kw: what each claim sent the handler, so that a restore
carries its curtail's test flag and commitment rather than the dispatch's later ones

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# ALTER TABLE in place, on SQLite too (3.35 and newer drop columns): a batch operation would
# copy the table, which the views that name it forbid, and at millions of actions, take long


def upgrade() -> None:
    op.add_column("actions", sa.Column("test", sa.Boolean(), nullable=True))
    op.add_column("actions", sa.Column("commitment_kw", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("actions", "commitment_kw")
    op.drop_column("actions", "test")
