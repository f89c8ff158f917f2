"""A new event kind, `action_acknowledged`: someone saw to an action that ended failed or missed
(`etl ack`), who and why. The events' CHECK constraint lists the kinds, so it changes.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from importlib import import_module

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the kinds as revision 0015 made them, and its way of changing a constraint on SQLite
CHECKS = import_module("etl.migrations.versions.0015_vocabulary_checks")
KINDS: tuple[str, ...] = CHECKS.EVENT_KINDS
NEW_KINDS = (*KINDS, "action_acknowledged")


def upgrade() -> None:
    _allow(KINDS, NEW_KINDS)


def downgrade() -> None:
    # the older vocabulary has no word for them: the acknowledgements are lost
    op.execute("DELETE FROM events WHERE kind = 'action_acknowledged'")
    _allow(NEW_KINDS, KINDS)


def _allow(before: tuple[str, ...], after: tuple[str, ...]) -> None:
    old, new = (CHECKS.condition("kind", kinds, False) for kinds in (before, after))
    if op.get_bind().dialect.name == "sqlite":
        CHECKS._rebuild_sqlite("events", lambda sql: _replaced(sql, old, new))
        return
    op.drop_constraint(op.f("ck_events_kind"), "events", type_="check")
    op.create_check_constraint(op.f("ck_events_kind"), "events", new)


def _replaced(sql: str, old: str, new: str) -> str:
    assert old in sql, "the events' CHECK is not as revision 0015 made it"
    return sql.replace(old, new)
