"""store_binding: the API origin a store serves and a salted fingerprint of its key, so that a
run pointed at another account is refused instead of restoring the first account's sites

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "store_binding",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("api_origin", sa.String(), nullable=False),
        sa.Column("key_salt", sa.String(length=32), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("store_binding")
