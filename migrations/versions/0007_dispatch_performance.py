"""performance: the view dispatch_performance, one row per (dispatch, site): the metered load
against a prior-hour baseline, and how fast it answered each command

Times are compared as whole seconds since the epoch, the one arithmetic both databases share
(SQLite keeps times as text; whole, so that `end + 1800` equals the epoch of the interval that
ends then, which a float's last digit would not). A site's load in an interval is the sum of its
meters' readings.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EPOCH = {
    "sqlite": "round((julianday({}) - 2440587.5) * 86400.0)",
    "postgresql": "round(EXTRACT(EPOCH FROM {}))",
}
TIMESTAMP = {"sqlite": "datetime({}, 'unixepoch')", "postgresql": "to_timestamp({})"}

VIEW = """
    WITH load AS (
        SELECT site_id, {epoch_interval_end} AS t, sum(kw) AS kw
        FROM telemetry
        WHERE interval_seconds = 60
        GROUP BY site_id, interval_end
    ),
    pairs AS (
        SELECT d.id AS dispatch_id, ds.site_id, d.program_id, d.start_time, d.end_time,
               ds.commitment_kw, {epoch_start} AS s, {epoch_end} AS e,
               (SELECT min({epoch_finished}) FROM actions a
                WHERE a.dispatch_id = d.id AND a.site_id = ds.site_id
                  AND a.kind = 'curtail' AND a.state = 'succeeded') AS curtailed,
               (SELECT min({epoch_finished}) FROM actions a
                WHERE a.dispatch_id = d.id AND a.site_id = ds.site_id
                  AND a.kind = 'restore' AND a.state = 'succeeded') AS restored
        FROM dispatches d
        JOIN dispatch_sites ds ON ds.dispatch_id = d.id
        WHERE d.authorized AND NOT d.test AND d.end_time IS NOT NULL AND ds.removed_at IS NULL
    ),
    measured AS (
        SELECT p.*,
               (SELECT avg(l.kw) FROM load l
                WHERE l.site_id = p.site_id AND l.t > p.s - 3600 AND l.t <= p.s) AS baseline_kw,
               (SELECT avg(l.kw) FROM load l
                WHERE l.site_id = p.site_id AND l.t > p.s AND l.t <= p.e) AS mean_kw,
               (SELECT count(*) FROM load l
                WHERE l.site_id = p.site_id AND l.t > p.s - 3600 AND l.t <= p.e + 1800)
                   AS present
        FROM pairs p
    ),
    answered AS (
        SELECT m.*,
               (SELECT min(l.t) FROM load l
                WHERE l.site_id = m.site_id AND l.t > m.s AND l.t <= m.e
                  AND l.kw <= m.baseline_kw - m.commitment_kw / 2) AS dropped,
               (SELECT min(l.t) FROM load l
                WHERE l.site_id = m.site_id AND l.t > m.restored
                  AND l.kw > m.baseline_kw - m.commitment_kw / 2) AS recovered
        FROM measured m
    )
    SELECT dispatch_id, site_id, program_id, start_time, end_time, commitment_kw,
           baseline_kw, mean_kw AS mean_kw_during, baseline_kw - mean_kw AS delivered_kw,
           CASE WHEN commitment_kw > 0
                THEN 100.0 * (baseline_kw - mean_kw) / commitment_kw END AS delivered_pct,
           {timestamp_dropped} AS responded_at,
           dropped - s AS response_seconds_from_start,
           dropped - curtailed AS response_seconds_from_curtail,
           recovered - restored AS recovery_seconds_from_restore,
           present * 60.0 / (e - s + 5400) AS coverage
    FROM answered
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    epoch, timestamp = EPOCH[dialect], TIMESTAMP[dialect]
    sql = VIEW.format(
        epoch_interval_end=epoch.format("interval_end"),
        epoch_start=epoch.format("d.start_time"),
        epoch_end=epoch.format("d.end_time"),
        epoch_finished=epoch.format("a.finished_at"),
        timestamp_dropped=timestamp.format("dropped"),
    )
    op.execute(f"CREATE VIEW dispatch_performance AS {sql}")


def downgrade() -> None:
    op.execute("DROP VIEW dispatch_performance")
