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
    allow_kinds("events", KINDS, NEW_KINDS)


def downgrade() -> None:
    # the older vocabulary has no word for them: the acknowledgements are lost
    op.execute("DELETE FROM events WHERE kind = 'action_acknowledged'")
    allow_kinds("events", NEW_KINDS, KINDS)


def allow_kinds(table: str, before: tuple[str, ...], after: tuple[str, ...]) -> None:
    """The table's `kind` CHECK changed from one list to the other (also for revision 0026)."""
    old, new = (CHECKS.condition("kind", kinds, False) for kinds in (before, after))
    if op.get_bind().dialect.name == "sqlite":
        CHECKS._rebuild_sqlite(table, lambda sql: _replaced(sql, old, new))
        return
    name = f"ck_{table}_kind"
    op.drop_constraint(op.f(name), table, type_="check")
    # NOT VALID, then VALIDATE: the rows are read under a lock that lets readers and writers on
    # (a plain ADD holds the table's exclusive lock while it reads every event of the history)
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({new}) NOT VALID")
    op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def _replaced(sql: str, old: str, new: str) -> str:
    assert old in sql, "the CHECK of kinds is not as the revision before made it"
    return sql.replace(old, new)
