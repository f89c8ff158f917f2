"""Years of history for the planning benchmark, generated inside the database (fast enough for a
million dispatches): ended dispatches of 4 sites each, every site curtailed and restored."""

from sqlalchemy import Engine, text

from etl.store.db import write_transaction

SITES = 500
SITES_PER_DISPATCH = 4
MINUTES_APART = 5  # 1,000,000 dispatches reach back 9.5 years

# `n` counts 0..count-1; `ts(expr)` renders a UTC time `expr` minutes before now, in the form etl
# stores on each database
SERIES = {
    "sqlite": "WITH RECURSIVE n(i) AS"
    " (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)",
    "postgresql": "WITH n(i) AS (SELECT generate_series(0, :count - 1))",
}
TIME = {
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({}) || ' minutes') || '000'",
    "postgresql": "now() - make_interval(mins => ({})::int)",
}
TRUE = {"sqlite": "1", "postgresql": "true"}


def fill_history(engine: Engine, count: int) -> None:
    dialect = engine.dialect.name
    series, yes = SERIES[dialect], TRUE[dialect]

    def ts(minutes_ago: str) -> str:
        return TIME[dialect].format(minutes_ago)

    start = ts(f"1440 + {MINUTES_APART} * i + 60")
    end = ts(f"1440 + {MINUTES_APART} * i")
    statements = [  # (SQL, how many rows its series counts)
        (
            "INSERT INTO programs"
            " (id, name, timezone, market, program_type, first_seen_at, updated_at)"
            f" VALUES (1, 'History', 'US/Central', 'MISO', 'capacity', {ts('0')}, {ts('0')})",
            0,
        ),
        (
            f"{series} INSERT INTO sites"
            " (id, name, customer_location_id, meters, first_seen_at, updated_at)"
            f" SELECT 's' || i, 'Site ' || i, 'loc' || i, NULL, {ts('0')}, {ts('0')} FROM n",
            SITES,
        ),
        (
            f"{series} INSERT INTO dispatches (id, program_id, authorized, test, start_time,"
            " end_time, creation_time, modification_number, metadata, raw, content_hash,"
            f" first_seen_at, updated_at) SELECT 'h' || i, 1, {yes}, NOT {yes}, {start}, {end},"
            f" NULL, 0, NULL, '{{}}', 'history', {start}, {start} FROM n",
            count,
        ),
    ]
    for site in range(SITES_PER_DISPATCH):
        site_id = f"'s' || ((i * {SITES_PER_DISPATCH} + {site}) % {SITES})"
        statements.append(
            (
                f"{series} INSERT INTO dispatch_sites (dispatch_id, site_id, commitment_kw,"
                f" added_at, removed_at, holding, episode) SELECT 'h' || i, {site_id}, 10.0,"
                f" {start}, NULL, NULL, 1 FROM n",
                count,
            )
        )
        for kind in ("curtail", "restore"):
            statements.append(
                (
                    f"{series} INSERT INTO actions (dispatch_id, site_id, kind, idempotency_key,"
                    " state, note, attempts, available_at, claimed_by, claimed_at, created_at,"
                    f" finished_at) SELECT 'h' || i, {site_id}, '{kind}', '{kind[0]}{site}-' || i,"
                    f" 'succeeded', NULL, 1, NULL, 'history', {start}, {start}, {end} FROM n",
                    count,
                )
            )
    with write_transaction(engine) as conn:
        for statement, rows in statements:
            conn.execute(text(statement), {"count": rows})
        conn.execute(text("ANALYZE"))  # the planner statistics a long-lived store would have
