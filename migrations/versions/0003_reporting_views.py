"""reporting: each dispatch's local start date, the views users query, an index for pruning

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same SQL on SQLite and PostgreSQL; the README documents each column.
VIEWS = {
    "curtailment_log": """
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
    """,
    "dispatch_summary": """
        SELECT d.id AS dispatch_id, d.program_id, p.name AS program_name, p.program_type,
               p.market, p.timezone, d.authorized, d.test, d.start_time, d.end_time,
               d.start_date_local, d.first_seen_at, d.updated_at,
               c.sites, c.committed_kw, c.curtails_succeeded, c.curtails_failed,
               c.curtails_missed, c.curtails_skipped, c.restores_succeeded,
               c.restores_superseded, c.restores_failed, c.open_actions,
               CASE
                   WHEN d.test THEN 'test'
                   WHEN NOT d.authorized AND c.curtails_succeeded = 0 THEN 'cancelled'
                   WHEN c.curtails_failed + c.restores_failed > 0 THEN 'failed'
                   WHEN c.curtails_missed > 0 THEN 'missed'
                   WHEN c.open_actions > 0 THEN 'in progress'
                   WHEN c.curtails_succeeded > 0 THEN 'done'
                   ELSE 'not started'
               END AS outcome
        FROM dispatches d
        JOIN programs p ON p.id = d.program_id
        JOIN (
            SELECT d2.id,
                (SELECT count(*) FROM dispatch_sites x
                 WHERE x.dispatch_id = d2.id AND x.removed_at IS NULL) AS sites,
                (SELECT coalesce(sum(x.commitment_kw), 0) FROM dispatch_sites x
                 WHERE x.dispatch_id = d2.id AND x.removed_at IS NULL) AS committed_kw,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'curtail' AND a.state = 'succeeded') AS curtails_succeeded,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'curtail' AND a.state = 'failed') AS curtails_failed,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'curtail' AND a.state = 'missed') AS curtails_missed,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'curtail' AND a.state = 'skipped') AS curtails_skipped,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'restore' AND a.state = 'succeeded') AS restores_succeeded,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'restore' AND a.state = 'superseded') AS restores_superseded,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.kind = 'restore' AND a.state = 'failed') AS restores_failed,
                (SELECT count(*) FROM actions a WHERE a.dispatch_id = d2.id
                 AND a.finished_at IS NULL AND a.state <> 'waiting') AS open_actions
            FROM dispatches d2
        ) c ON c.id = d.id
    """,
    "site_commitments_daily": """
        SELECT ds.site_id, s.name AS site_name, d.program_id, p.timezone,
               d.start_date_local AS day, count(*) AS dispatches,
               sum(ds.commitment_kw) AS committed_kw, max(ds.commitment_kw) AS max_committed_kw
        FROM dispatch_sites ds
        JOIN dispatches d ON d.id = ds.dispatch_id
        JOIN programs p ON p.id = d.program_id
        JOIN sites s ON s.id = ds.site_id
        WHERE d.authorized AND NOT d.test AND ds.removed_at IS NULL
        GROUP BY ds.site_id, s.name, d.program_id, p.timezone, d.start_date_local
    """,
    "site_commitments_monthly": """
        SELECT ds.site_id, s.name AS site_name, d.program_id, p.timezone,
               substr(d.start_date_local, 1, 7) AS month, count(*) AS dispatches,
               sum(ds.commitment_kw) AS committed_kw, max(ds.commitment_kw) AS max_committed_kw
        FROM dispatch_sites ds
        JOIN dispatches d ON d.id = ds.dispatch_id
        JOIN programs p ON p.id = d.program_id
        JOIN sites s ON s.id = ds.site_id
        WHERE d.authorized AND NOT d.test AND ds.removed_at IS NULL
        GROUP BY ds.site_id, s.name, d.program_id, p.timezone, substr(d.start_date_local, 1, 7)
    """,
}


def _local_date(start_time: datetime, zone_name: str) -> str | None:
    """As etl.timeutil.local_date, copied: migrations do not import code that will move on."""
    if start_time.tzinfo is None:  # SQLite's naive UTC
        start_time = start_time.replace(tzinfo=UTC)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return start_time.astimezone(zone).date().isoformat()


def upgrade() -> None:
    with op.batch_alter_table("dispatches") as batch:
        batch.add_column(sa.Column("start_date_local", sa.String(10), nullable=True))
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # in SQL, so that `etl db upgrade --sql` writes it too; a zone the database does not
        # list gives no date, as in Python below
        op.execute(
            "UPDATE dispatches SET start_date_local ="
            " to_char(dispatches.start_time AT TIME ZONE p.timezone, 'YYYY-MM-DD')"
            " FROM programs p WHERE p.id = dispatches.program_id"
            " AND p.timezone IN (SELECT name FROM pg_timezone_names)"
        )
    else:
        _fill_local_dates(conn)
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
    op.create_index("ix_events_fetch_run_id", "events", ["fetch_run_id"])


def _fill_local_dates(conn: sa.Connection) -> None:
    """SQLite has no time zones: each date is worked out here (SQLite is migrated online only)."""
    rows = conn.execute(
        sa.text(
            "SELECT d.id, d.start_time, p.timezone FROM dispatches d"
            " JOIN programs p ON p.id = d.program_id"
        ).columns(id=sa.String(), start_time=sa.DateTime(timezone=True), timezone=sa.String())
    ).all()
    if rows:
        conn.execute(
            sa.text("UPDATE dispatches SET start_date_local = :day WHERE id = :id"),
            [{"id": id_, "day": _local_date(start, zone)} for id_, start, zone in rows],
        )


def downgrade() -> None:
    op.drop_index("ix_events_fetch_run_id", "events")
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    with op.batch_alter_table("dispatches") as batch:
        batch.drop_column("start_date_local")
