"""CHECK constraints on the state and kind columns: the vocabulary the README documents, enforced
by the database too, so that no writer (etl's or a person's SQL) records a state no reader knows

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import re
from collections.abc import Callable, Sequence
from functools import partial

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the values as of this revision: a later vocabulary is a later revision
EVENT_KINDS = (
    "dispatch_created", "dispatch_cancelled", "dispatch_end_time_set", "dispatch_end_time_moved",
    "dispatch_changed", "dispatch_site_added", "dispatch_site_removed", "dispatch_site_changed",
    "dispatch_vanished", "site_seen", "site_renamed", "site_changed", "program_seen",
    "program_changed", "dispatch_rejected", "site_rejected", "telemetry_rejected",
    "telemetry_received", "store_bound", "action_planned", "action_claimed", "action_retrying",
    "action_succeeded", "action_failed", "action_missed", "action_skipped", "action_superseded",
)  # fmt: skip
ACTION_STATES = (
    "pending", "waiting", "claimed", "retrying", "succeeded", "failed", "missed", "skipped",
    "superseded",
)  # fmt: skip

# table -> (constraint name, column, allowed values, whether NULL is allowed)
CHECKS: dict[str, list[tuple[str, str, tuple[str, ...], bool]]] = {
    "actions": [
        ("ck_actions_kind", "kind", ("curtail", "restore"), False),
        ("ck_actions_state", "state", ACTION_STATES, False),
    ],
    "action_attempts": [
        ("ck_action_attempts_outcome", "outcome", ("succeeded", "failed", "abandoned"), True),
    ],
    "events": [("ck_events_kind", "kind", EVENT_KINDS, False)],
    "fetch_runs": [
        ("ck_fetch_runs_outcome", "outcome", ("succeeded", "failed", "superseded"), False),
        ("ck_fetch_runs_kind", "kind", ("listing", "lookup", "telemetry"), False),
    ],
    "rejected_records": [
        ("ck_rejected_records_kind", "kind", ("dispatch", "site", "telemetry"), False),
    ],
    "dispatch_sites": [("ck_dispatch_sites_holding", "holding", ("held", "test"), True)],
}


def condition(column: str, values: tuple[str, ...], nullable: bool) -> str:
    listed = f"{column} IN ({', '.join(repr(v) for v in values)})"
    return f"{column} IS NULL OR {listed}" if nullable else listed


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, checks in CHECKS.items():
            clauses = "".join(
                f", \n\tCONSTRAINT {name} CHECK ({condition(column, values, nullable)})"
                for name, column, values, nullable in checks
            )
            # the clauses go last, before the closing parenthesis
            _rebuild_sqlite(table, partial(_ending_with, clauses))
        return
    for table, checks in CHECKS.items():
        for name, column, values, nullable in checks:
            op.create_check_constraint(op.f(name), table, condition(column, values, nullable))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, checks in CHECKS.items():
            first = f", \n\tCONSTRAINT {checks[0][0]} CHECK"  # upgrade put them all last
            _rebuild_sqlite(table, partial(_cut_at, first))
        return
    for table, checks in CHECKS.items():
        for name, *_ in checks:
            op.drop_constraint(op.f(name), table, type_="check")


def _ending_with(clauses: str, sql: str) -> str:
    return sql.rstrip()[:-1] + clauses + "\n)"


def _cut_at(first: str, sql: str) -> str:
    return sql[: sql.index(first)] + "\n)"


# SQLite adds or drops a constraint only by copying the table (its documented procedure, "making
# other kinds of table schema changes"): a new table from the changed CREATE TABLE, the rows
# copied, the old one dropped, the new one renamed, its indexes made again from their own SQL
# (partial ones included). The views that name the table are dropped first and made again last.


def _rebuild_sqlite(table: str, change: Callable[[str], str]) -> None:
    conn = op.get_bind()
    master = "SELECT type, name, sql FROM sqlite_master"
    (create,) = conn.exec_driver_sql(f"{master} WHERE type = 'table' AND name = ?", (table,))
    indexes = conn.exec_driver_sql(
        f"{master} WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
    ).all()
    views = conn.exec_driver_sql(f"{master} WHERE type = 'view' ORDER BY rowid").all()
    for view in views:
        conn.exec_driver_sql(f"DROP VIEW {view.name}")
    # the name is quoted where an earlier migration copied the table
    header = re.compile(rf'^CREATE TABLE "?{table}"? ')
    new_sql = header.sub(f"CREATE TABLE _new_{table} ", change(create.sql), count=1)
    assert new_sql.startswith(f"CREATE TABLE _new_{table} "), create.sql
    conn.exec_driver_sql(new_sql)
    conn.exec_driver_sql(f"INSERT INTO _new_{table} SELECT * FROM {table}")
    conn.exec_driver_sql(f"DROP TABLE {table}")
    conn.exec_driver_sql(f"ALTER TABLE _new_{table} RENAME TO {table}")
    for index in indexes:
        conn.exec_driver_sql(index.sql)
    for view in views:
        conn.exec_driver_sql(view.sql)
