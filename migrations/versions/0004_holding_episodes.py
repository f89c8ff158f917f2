"""holding episodes: an action per (dispatch, site, kind, episode); the planner's record of what
held each site; missing dispatches; the time of each fetch's listing

Existing actions become episode 1 and keep their idempotency keys. A pair whose curtail or
restore is still open is recorded as held, so the next plan carries on where the old one was.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
OPEN = sa.text("finished_at IS NULL")
# now, comparable with the stored times: on SQLite, naive UTC text of their fixed width
NOW = {
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
    "postgresql": "CURRENT_TIMESTAMP",
}

# the view as 0003 created it, and as this revision has it: with each action's episode
CURTAILMENT_LOG_0003 = """
    SELECT a.id AS action_id, a.kind AS action, a.state, a.idempotency_key,
           a.dispatch_id, d.program_id, p.name AS program_name, d.test,
           d.start_time AS dispatch_start_time, d.end_time AS dispatch_end_time,
           a.site_id, s.name AS site_name, s.customer_location_id, ds.commitment_kw,
           a.attempts, a.created_at AS planned_at,
           (SELECT min(t.started_at) FROM action_attempts t WHERE t.action_id = a.id)
               AS first_attempt_at,
           a.finished_at, a.claimed_by AS last_worker, a.note
    FROM actions a
    JOIN dispatches d ON d.id = a.dispatch_id
    JOIN programs p ON p.id = d.program_id
    JOIN sites s ON s.id = a.site_id
    JOIN dispatch_sites ds ON ds.dispatch_id = a.dispatch_id AND ds.site_id = a.site_id
"""
CURTAILMENT_LOG = CURTAILMENT_LOG_0003.replace(
    "a.kind AS action, a.state,", "a.kind AS action, a.episode, a.state,"
)


@contextmanager
def _views_set_aside() -> Iterator[None]:
    """SQLite changes a table by copying it, and the copy's final rename fails while views name
    the table: drop them meanwhile, and create them again as they were."""
    conn = op.get_bind()
    views: list[tuple[str, str]] = []
    if conn.dialect.name == "sqlite":
        query = sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY name")
        views = [(name, sql) for name, sql in conn.execute(query)]
        for name, _ in views:
            op.execute(f"DROP VIEW {name}")
    yield
    for _, sql in views:
        op.execute(sql)


@contextmanager
def _open_index_set_aside() -> Iterator[None]:
    """A copied SQLite table would get its partial index back without its condition."""
    op.drop_index("ix_actions_open", "actions")
    yield
    op.create_index(
        "ix_actions_open",
        "actions",
        ["state", "available_at"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def upgrade() -> None:
    with _views_set_aside():
        _upgrade()
    _replace_curtailment_log(CURTAILMENT_LOG)


def downgrade() -> None:
    _replace_curtailment_log(CURTAILMENT_LOG_0003)
    with _views_set_aside():
        _downgrade()


def _replace_curtailment_log(query: str) -> None:
    op.execute("DROP VIEW curtailment_log")
    op.execute(f"CREATE VIEW curtailment_log AS {query}")


def _upgrade() -> None:
    with _open_index_set_aside(), op.batch_alter_table("actions") as batch:
        batch.add_column(
            sa.Column("episode", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch.drop_constraint("uq_actions_dispatch_site_kind", type_="unique")
        batch.create_unique_constraint(
            "uq_actions_dispatch_site_kind_episode", ["dispatch_id", "site_id", "kind", "episode"]
        )
    op.create_index(
        "ix_actions_open_site",
        "actions",
        ["site_id", "id"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    with op.batch_alter_table("dispatch_sites") as batch:
        batch.add_column(sa.Column("holding", sa.String(10), nullable=True))
        batch.add_column(
            sa.Column("episode", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("dispatches") as batch:
        batch.add_column(sa.Column("missing_since", TIME, nullable=True))
    with op.batch_alter_table("fetch_runs") as batch:
        batch.add_column(sa.Column("listing_requested_at", TIME, nullable=True))
    _record_what_holds_each_site()
    op.create_index(
        "ix_dispatch_sites_holding",
        "dispatch_sites",
        ["holding"],
        sqlite_where=sa.text("holding IS NOT NULL"),
        postgresql_where=sa.text("holding IS NOT NULL"),
    )


def _record_what_holds_each_site() -> None:
    pair = "a.dispatch_id = dispatch_sites.dispatch_id AND a.site_id = dispatch_sites.site_id"
    op.execute(
        f"UPDATE dispatch_sites SET episode = 1 WHERE EXISTS "
        f"(SELECT 1 FROM actions a WHERE {pair} AND a.kind = 'curtail')"
    )
    op.execute(
        f"UPDATE dispatch_sites SET holding = 'held' WHERE EXISTS "
        f"(SELECT 1 FROM actions a WHERE {pair} AND a.finished_at IS NULL)"
    )
    # a test dispatch still in its window: recorded once as skipped, and not again. The time is
    # the database's, so that a script of `etl db upgrade --sql` applied later judges by then.
    now = NOW[op.get_bind().dialect.name]
    op.execute(
        f"UPDATE dispatch_sites SET holding = 'test' WHERE holding IS NULL AND EXISTS "
        f"(SELECT 1 FROM actions a JOIN dispatches d ON d.id = a.dispatch_id WHERE {pair}"
        f" AND a.kind = 'curtail' AND a.state = 'skipped' AND d.test"
        f" AND (d.end_time IS NULL OR d.end_time > {now}))"
    )


def _downgrade() -> None:
    # the old schema has room for one curtail and one restore per (dispatch, site): later
    # episodes' actions go (their events stay in the log)
    later = "SELECT id FROM actions WHERE episode > 1"
    op.execute(f"DELETE FROM action_attempts WHERE action_id IN ({later})")
    op.execute("DELETE FROM actions WHERE episode > 1")
    op.drop_index("ix_dispatch_sites_holding", "dispatch_sites")
    with op.batch_alter_table("fetch_runs") as batch:
        batch.drop_column("listing_requested_at")
    with op.batch_alter_table("dispatches") as batch:
        batch.drop_column("missing_since")
    with op.batch_alter_table("dispatch_sites") as batch:
        batch.drop_column("episode")
        batch.drop_column("holding")
    op.drop_index("ix_actions_open_site", "actions")
    with _open_index_set_aside(), op.batch_alter_table("actions") as batch:
        batch.drop_constraint("uq_actions_dispatch_site_kind_episode", type_="unique")
        batch.create_unique_constraint(
            "uq_actions_dispatch_site_kind", ["dispatch_id", "site_id", "kind"]
        )
        batch.drop_column("episode")
