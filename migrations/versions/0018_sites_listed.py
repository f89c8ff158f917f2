"""sites.listed_since and sites.unlisted_since: whether GET /sites lists each site, so that status
can warn of a site a dispatch names that the API key's account does not list (Voltus: "a given
API key will only get dispatch notifications that include sites visible to the account"), and of
a site that stopped being listed

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("listed_since", "unlisted_since")
TIME = sa.DateTime(timezone=True)  # as the models' UTCDateTime is in the database


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("sites", sa.Column(name, TIME, nullable=True))


def downgrade() -> None:
    # a plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): a batch's copy of the
    # table would fail on the views that read it
    for name in COLUMNS:
        op.drop_column("sites", name)
