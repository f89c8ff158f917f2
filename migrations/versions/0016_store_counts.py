"""store_counts and store_count_changes: the metrics' counts of finished actions by state and of
failed attempts, kept by the database's triggers, so that reading them costs the same at any age
of the store (a count over every action grew with history: 0.31 s at 8 million actions)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An action counts once it is finished (`finished_at` set: its state is final), an attempt once
# it failed. Each trigger fires only when a row enters, leaves or changes its count, so that the
# processor's claims and renewals, which finish nothing, never call one: a trigger on every
# change of state cost the processor a fifth of its actions per second on PostgreSQL.
COUNTED = {  # table: (the count a row is in, or NULL for none; the columns that decide it)
    "actions": ("CASE WHEN {row}.finished_at IS NOT NULL THEN 'finished_' || {row}.state END",
                "state, finished_at"),
    "action_attempts": ("CASE WHEN {row}.outcome = 'failed' THEN 'attempts_failed' END",
                        "outcome"),
}  # fmt: skip
CHANGE = "INSERT INTO store_count_changes (name, delta)"


def _triggers(table: str, count: str, columns: str, sqlite: bool) -> dict[str, tuple[str, str]]:
    """Each trigger's event and condition; the body adds the row's count after and takes off
    its count before (an insert has no before, a delete no after)."""
    new, old = count.format(row="NEW"), count.format(row="OLD")
    # a comparison that holds NULL equal to NULL (SQLite has IS DISTINCT FROM only since 3.39)
    differs = "IS NOT" if sqlite else "IS DISTINCT FROM"
    return {
        f"{table}_counted_insert": ("INSERT", f"{new} IS NOT NULL"),
        f"{table}_counted_update": (f"UPDATE OF {columns}", f"{new} {differs} {old}"),
        f"{table}_counted_delete": ("DELETE", f"{old} IS NOT NULL"),
    }


def upgrade() -> None:
    op.create_table(
        "store_counts",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "store_count_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # the triggers first: on PostgreSQL they lock the tables until this transaction ends, so
    # that no change falls between the counts below and the first change counted
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, (count, columns) in COUNTED.items():
        new, old = count.format(row="NEW"), count.format(row="OLD")
        added = f"SELECT {new}, 1 WHERE {new} IS NOT NULL"
        taken = f"SELECT {old}, -1 WHERE {old} IS NOT NULL"
        if not sqlite:
            function = f"etl_count_{table}"
            op.execute(
                f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF TG_OP <> 'DELETE' THEN {CHANGE} {added}; END IF; "
                f"IF TG_OP <> 'INSERT' THEN {CHANGE} {taken}; END IF; "
                "RETURN NULL; END $$"
            )
        for name, (event, condition) in _triggers(table, count, columns, sqlite).items():
            if sqlite:
                steps = {"INSERT": [added], "DELETE": [taken]}.get(event, [added, taken])
                body = " ".join(f"{CHANGE} {step};" for step in steps)
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {event} ON {table} WHEN {condition} "
                    f"BEGIN {body} END"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                    f"WHEN ({condition}) EXECUTE FUNCTION etl_count_{table}()"
                )
        op.execute(
            f"INSERT INTO store_counts (name, n) SELECT name, count(*) FROM "
            f"(SELECT {count.format(row=table)} AS name FROM {table}) AS counted "
            "WHERE name IS NOT NULL GROUP BY name"
        )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, (count, columns) in COUNTED.items():
        for name in _triggers(table, count, columns, sqlite):
            op.execute(f"DROP TRIGGER {name}" if sqlite else f"DROP TRIGGER {name} ON {table}")
        if not sqlite:
            op.execute(f"DROP FUNCTION etl_count_{table}()")
    op.drop_table("store_count_changes")
    op.drop_table("store_counts")
