"""An index of the outbox's readings by when they were sent: the outbox keeps its sent history
for a while (ETL_OUTBOX_KEEP, 35 days by default) and each drain prunes what is older a few
thousand readings at a time (etl.store.outbox.prune), which without it would read the whole
table to find them: at a fleet's size, millions of readings a day.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_telemetry_outbox_sent_at", "telemetry_outbox", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_telemetry_outbox_sent_at", table_name="telemetry_outbox")
