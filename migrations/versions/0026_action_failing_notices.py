"""Two new notification kinds: `action_failing` (an action's first failed attempt, told while it is
retried) and `action_cleared` (its success, once it was told failing). The notifications' CHECK
constraint lists the kinds, so it changes.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from importlib import import_module

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the kinds as revision 0021 made them, and revision 0025's way of changing their CHECK
KINDS: tuple[str, ...] = import_module("etl.migrations.versions.0021_status_notices").NEW_KINDS
allow_kinds = import_module("etl.migrations.versions.0025_acknowledged_actions").allow_kinds
NEW_KINDS = (*KINDS, "action_failing", "action_cleared")


def upgrade() -> None:
    allow_kinds("notifications", KINDS, NEW_KINDS)


def downgrade() -> None:
    # the older vocabulary has no word for them (nor do they have an event to stand for them)
    told = "SELECT id FROM notifications WHERE kind IN ('action_failing', 'action_cleared')"
    op.execute(f"DELETE FROM notification_deliveries WHERE notification_id IN ({told})")
    op.execute(f"DELETE FROM notifications WHERE id IN ({told})")
    allow_kinds("notifications", NEW_KINDS, KINDS)
