"""performance: the view dispatch_performance, one row per (dispatch, site): the metered load
against a prior-hour baseline, and how fast it answered each command

Each lookup of readings is a range of the index on (site_id, interval_end): a minutely `etl
status` reads the view for recent dispatches only. Durations are whole seconds since the epoch,
the one arithmetic both databases share (SQLite keeps times as text).

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

# whole seconds since the epoch, for the durations the view gives
EPOCH = {
    "sqlite": "round((julianday({}) - 2440587.5) * 86400.0)",
    "postgresql": "round(EXTRACT(EPOCH FROM {}))",
}
# a time moved by some seconds, comparable with the stored ones so that the index on
# (site_id, interval_end) serves each lookup: on SQLite, text of the stored fixed width
SHIFTED = {
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', {}, '{:+d} seconds') || '000')",
    "postgresql": "({} + interval '{:+d} seconds')",
}

# a site's load in an interval is the sum of its meters' readings
READINGS = """
    FROM telemetry t
    WHERE t.site_id = {pair}.site_id AND t.interval_seconds = 60
      AND t.interval_end > {after} AND t.interval_end <= {until}
"""

VIEW = """
    WITH pairs AS (
        SELECT d.id AS dispatch_id, ds.site_id, d.program_id, d.start_time, d.end_time,
               ds.commitment_kw,
               (SELECT min(a.finished_at) FROM actions a
                WHERE a.dispatch_id = d.id AND a.site_id = ds.site_id
                  AND a.kind = 'curtail' AND a.state = 'succeeded') AS curtailed_at,
               (SELECT min(a.finished_at) FROM actions a
                WHERE a.dispatch_id = d.id AND a.site_id = ds.site_id
                  AND a.kind = 'restore' AND a.state = 'succeeded') AS restored_at
        FROM dispatches d
        JOIN dispatch_sites ds ON ds.dispatch_id = d.id
        WHERE d.authorized AND NOT d.test AND d.end_time IS NOT NULL AND ds.removed_at IS NULL
    ),
    measured AS (
        SELECT p.*,
               (SELECT sum(t.kw) / count(DISTINCT t.interval_end) {before}) AS baseline_kw,
               (SELECT sum(t.kw) / count(DISTINCT t.interval_end) {during}) AS mean_kw,
               (SELECT count(DISTINCT t.interval_end) {window}) AS present
        FROM pairs p
    ),
    answered AS (
        SELECT m.*,
               (SELECT t.interval_end {during_m}
                GROUP BY t.interval_end
                HAVING sum(t.kw) <= m.baseline_kw - m.commitment_kw / 2
                ORDER BY t.interval_end LIMIT 1) AS responded_at,
               (SELECT t.interval_end {after_restore}
                GROUP BY t.interval_end
                HAVING sum(t.kw) > m.baseline_kw - m.commitment_kw / 2
                ORDER BY t.interval_end LIMIT 1) AS recovered_at
        FROM measured m
    )
    SELECT dispatch_id, site_id, program_id, start_time, end_time, commitment_kw,
           baseline_kw, mean_kw AS mean_kw_during, baseline_kw - mean_kw AS delivered_kw,
           CASE WHEN commitment_kw > 0
                THEN 100.0 * (baseline_kw - mean_kw) / commitment_kw END AS delivered_pct,
           responded_at,
           {epoch_responded} - {epoch_start} AS response_seconds_from_start,
           {epoch_responded} - {epoch_curtailed} AS response_seconds_from_curtail,
           {epoch_recovered} - {epoch_restored} AS recovery_seconds_from_restore,
           present * 60.0 / ({epoch_end} - {epoch_start} + 5400) AS coverage
    FROM answered
"""


def view_sql(dialect: str) -> str:
    epoch, shifted = EPOCH[dialect].format, SHIFTED[dialect].format

    def readings(pair: str, after: str, until: str) -> str:
        return READINGS.format(pair=pair, after=after, until=until)

    return VIEW.format(
        before=readings("p", shifted("p.start_time", -3600), "p.start_time"),
        during=readings("p", "p.start_time", "p.end_time"),
        window=readings("p", shifted("p.start_time", -3600), shifted("p.end_time", 1800)),
        during_m=readings("m", "m.start_time", "m.end_time"),
        after_restore=readings("m", "m.restored_at", shifted("m.restored_at", 86400)),
        epoch_responded=epoch("responded_at"),
        epoch_recovered=epoch("recovered_at"),
        epoch_start=epoch("start_time"),
        epoch_end=epoch("end_time"),
        epoch_curtailed=epoch("curtailed_at"),
        epoch_restored=epoch("restored_at"),
    )


def upgrade() -> None:
    sql = view_sql(op.get_bind().dialect.name)
    op.execute(f"CREATE VIEW dispatch_performance AS {sql}")


def downgrade() -> None:
    op.execute("DROP VIEW dispatch_performance")
