"""telemetry_requests.refused: the API's refusal at a window's last ask, so that status warns
while it lasts rather than after each failed pass only

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSED = sa.text("refused IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("telemetry_requests") as batch:
        batch.add_column(sa.Column("refused", sa.Text(), nullable=True))
    op.create_index(
        "ix_telemetry_requests_refused",
        "telemetry_requests",
        ["asked_at"],
        sqlite_where=REFUSED,
        postgresql_where=REFUSED,
    )


def downgrade() -> None:
    op.drop_index("ix_telemetry_requests_refused", "telemetry_requests")
    with op.batch_alter_table("telemetry_requests") as batch:
        batch.drop_column("refused")
