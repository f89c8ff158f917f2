"""store_counts and store_count_changes: the metrics' counts of actions by state and of failed
attempts, kept by the database's triggers, so that reading them costs the same at any age of
the store (a count over every action grew with history: 0.31 s at 8 million actions)

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

CHANGE = "INSERT INTO store_count_changes (name, delta) VALUES"

SQLITE_TRIGGERS = {
    "actions_counted_insert": f"""AFTER INSERT ON actions
        BEGIN {CHANGE} ('actions_' || NEW.state, 1); END""",
    "actions_counted_update": f"""AFTER UPDATE OF state ON actions WHEN OLD.state <> NEW.state
        BEGIN {CHANGE} ('actions_' || OLD.state, -1), ('actions_' || NEW.state, 1); END""",
    "actions_counted_delete": f"""AFTER DELETE ON actions
        BEGIN {CHANGE} ('actions_' || OLD.state, -1); END""",
    "attempts_counted_insert": f"""AFTER INSERT ON action_attempts WHEN NEW.outcome = 'failed'
        BEGIN {CHANGE} ('attempts_failed', 1); END""",
    "attempts_counted_update": f"""AFTER UPDATE OF outcome ON action_attempts
        WHEN (OLD.outcome IS 'failed') <> (NEW.outcome IS 'failed')
        BEGIN {CHANGE} ('attempts_failed', CASE WHEN NEW.outcome IS 'failed' THEN 1 ELSE -1 END);
        END""",
    "attempts_counted_delete": f"""AFTER DELETE ON action_attempts WHEN OLD.outcome = 'failed'
        BEGIN {CHANGE} ('attempts_failed', -1); END""",
}

POSTGRESQL_FUNCTIONS = {
    "etl_count_action": f"""
        IF TG_OP = 'UPDATE' AND OLD.state = NEW.state THEN
            RETURN NULL;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            {CHANGE} ('actions_' || OLD.state, -1);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            {CHANGE} ('actions_' || NEW.state, 1);
        END IF;
        RETURN NULL;""",
    "etl_count_attempt": f"""
        IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.outcome IS NOT DISTINCT FROM 'failed' THEN
            {CHANGE} ('attempts_failed', -1);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.outcome IS NOT DISTINCT FROM 'failed' THEN
            {CHANGE} ('attempts_failed', 1);
        END IF;
        RETURN NULL;""",
}
POSTGRESQL_TRIGGERS = {
    "actions_counted": "AFTER INSERT OR DELETE OR UPDATE OF state ON actions "
    "FOR EACH ROW EXECUTE FUNCTION etl_count_action()",
    "attempts_counted": "AFTER INSERT OR DELETE OR UPDATE OF outcome ON action_attempts "
    "FOR EACH ROW EXECUTE FUNCTION etl_count_attempt()",
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
    if op.get_bind().dialect.name == "sqlite":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    else:
        for name, body in POSTGRESQL_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} "
                "END $$"
            )
        for name, body in POSTGRESQL_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(
        "INSERT INTO store_counts (name, n) "
        "SELECT 'actions_' || state, count(*) FROM actions GROUP BY state"
    )
    op.execute(
        "INSERT INTO store_counts (name, n) "
        "SELECT 'attempts_failed', count(*) FROM action_attempts WHERE outcome = 'failed'"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    else:
        op.execute("DROP TRIGGER actions_counted ON actions")
        op.execute("DROP TRIGGER attempts_counted ON action_attempts")
        for name in POSTGRESQL_FUNCTIONS:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("store_count_changes")
    op.drop_table("store_counts")
