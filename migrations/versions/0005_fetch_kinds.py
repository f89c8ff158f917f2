"""fetch kinds: a fetch run is a listing (the poll) or a lookup of one dispatch (a webhook's)

Existing runs are listings. `etl status` judges freshness by listings alone: the poll is the
safety net, and webhooks may stop without notice.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fetch_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="listing"))


def downgrade() -> None:
    with op.batch_alter_table("fetch_runs") as batch:
        batch.drop_column("kind")
