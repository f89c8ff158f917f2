"""dispatch_summary says what a dispatch's sites are: its `outcome` is `curtailed` while a site it
curtailed is still held (its restore waits for the end), then `restored`, where it said `done`
for both; and a new column, `restores_waiting`.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from importlib import import_module

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the view as revision 0003 made it, changed in three places
BEFORE: str = import_module("etl.migrations.versions.0003_reporting_views").VIEWS[
    "dispatch_summary"
]
CHANGES = [
    (
        "c.restores_superseded, c.restores_failed, c.open_actions,",
        "c.restores_superseded, c.restores_failed, c.restores_waiting, c.open_actions,",
    ),
    (
        "WHEN c.curtails_succeeded > 0 THEN 'done'",
        "WHEN c.restores_waiting > 0 THEN 'curtailed'\n"
        "                   WHEN c.curtails_succeeded > 0 THEN 'restored'",
    ),
    (
        "(SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id\n"
        "                 AND a.finished_at IS NULL AND a.state <> 'waiting') AS open_actions",
        "(SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id\n"
        "                 AND a.kind = 'restore' AND a.state = 'waiting') AS restores_waiting,\n"
        "                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id\n"
        "                 AND a.finished_at IS NULL AND a.state <> 'waiting') AS open_actions",
    ),
]


def after() -> str:
    sql = BEFORE
    for old, new in CHANGES:
        assert old in sql, old
        sql = sql.replace(old, new)
    return sql


def upgrade() -> None:
    op.execute("DROP VIEW dispatch_summary")
    op.execute(f"CREATE VIEW dispatch_summary AS {after()}")


def downgrade() -> None:
    op.execute("DROP VIEW dispatch_summary")
    op.execute(f"CREATE VIEW dispatch_summary AS {BEFORE}")
