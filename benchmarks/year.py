"""A year of a fleet's history (issue 31): do the reads and the minutely run stay fast with it?

`build` makes, once, in the PostgreSQL schema `year_fleet`, the store a year of a 5,000-site
fleet leaves: two dispatches a day (each of every site, an hour long, ended), each site curtailed
and restored by one successful attempt, the events etl writes for all of it, a listing fetch a
minute, and the telemetry fetched for proof with its asks. Every row is made inside the database
(INSERT ... SELECT over generate_series, as benchmarks/history.py does), table by table in the
order of the foreign keys; the keys, indexes and foreign keys are made again after the load, as
PostgreSQL's manual advises, each foreign key checking every row then. A full year of readings
at TELEMETRY_INTERVAL would be 548 million rows (about 100 GB with their indexes), more than the
disk holds, so the readings are those of the last `telemetry_days` (as if older ones had been
pruned); the event log keeps the `telemetry_received` of every dispatch. The schema is kept: a
later `build` with the same arguments that finds it whole reuses it (`rebuild=True` makes it
again).

`measure` times, on that store, each read against its target of 1 s, both the whole command and
the library call inside it (start-up against work): `etl status`, the console's now page, a
month of `etl report performance`, `etl audit --site`; and a whole `etl run` against the
emulator (no dispatch listed) against the floor of the cron figure (benchmarks/floor.py loading
1,000 dispatches, a whole process, here into PostgreSQL), target 1.2x, beside the same run on
an empty store (what the history costs it).

`slow_statements` says why a library call is slow: each SELECT it ran, run again under
EXPLAIN (ANALYZE, BUFFERS), slowest first.

    .venv/bin/python -m benchmarks.year [--days 30] [--rebuild] [--explain]
"""

import argparse
import compileall
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event

from benchmarks import ingest
from benchmarks.databases import POSTGRES, fresh_database, scratch_url
from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.timeutil import utcnow
from etl.console.app import HEALTH_SECONDS
from etl.ingest import measures
from etl.jobs import runner
from etl.read import audit, pages, reports, status
from etl.sandbox.emulator import Sandbox
from etl.store import binding
from etl.store.db import make_engine
from etl.store.migrate import migrate
from etl.store.schema import BASELINE_BEFORE, TELEMETRY_INTERVAL

SCHEMA = "year_fleet"
URL = f"{POSTGRES}?options=-csearch_path%3D{SCHEMA}"
DAYS, SITES, TELEMETRY_DAYS = 365, 5_000, 35
TARGET_S, RUN_TARGET = 1.0, 1.2  # each read; the minutely run over its floor
AUDITED_SITE = "s42"
REPO = Path(__file__).parents[1]
ETL = str(Path(sys.executable).parent / "etl")
WORKER = "fleet-1:4242"
# the readings of one (dispatch, site): (start - BASELINE_BEFORE, end + 30 min] as
# etl.ingest.telemetry fetches them, for the hour-long dispatches here
READINGS = int((BASELINE_BEFORE + timedelta(hours=1, minutes=30)).total_seconds()) // (
    TELEMETRY_INTERVAL
)
PHASES = 8  # events of one (dispatch, site): 3 of its curtail, 4 of its restore, its telemetry
CHUNK, TELEMETRY_CHUNK = 20, 2  # dispatches a statement


# The dispatches of the statement's chunk, j from lo to hi - 1 (0 the oldest): one every 12 hours,
# the newest ended an hour before `anchor`'s hour, each an hour long; and the fleet's sites.
SERIES = """WITH d AS (
    SELECT j, 'year-' || lpad(j::text, 5, '0') AS id,
           %(anchor)s::timestamptz - (%(n)s::int - 1 - j) * interval '12 hours' AS end_time
    FROM generate_series(%(lo)s::int, %(hi)s::int - 1) AS j
), s AS (SELECT s, 's' || s AS site_id FROM generate_series(0, %(sites)s::int - 1) AS s)
"""
# when each thing happened to a (dispatch d, site s), as etl run would have done it: the curtail
# planned a second after the start and claimed within the next 2 s (5,000 sites), its handler
# 50 ms; the restore likewise at the end; the telemetry asked for 50 minutes after the end
TIMES = """CROSS JOIN LATERAL (SELECT
    d.end_time - interval '1 hour' AS start_time,
    d.end_time - interval '3 hours' AS seen,
    d.end_time - interval '1 hour' + interval '1 s' AS c_plan,
    d.end_time - interval '1 hour' + interval '2 s' + s.s * interval '0.4 ms' AS c_claim,
    d.end_time + interval '1 s' AS r_due,
    d.end_time + interval '2 s' + s.s * interval '0.4 ms' AS r_claim,
    d.end_time + interval '50 minutes' AS asked) AS t"""
COMMITMENT = "(5 + s.s %% 10)::float8"
HANDLED = "interval '50 ms'"


def _key(kind: str) -> str:
    """An action's idempotency key: a UUID of the store's namespace and the action (an MD5 one:
    etl's are SHA-1 ones, uuid5, which PostgreSQL cannot make without pgcrypto)."""
    return f"md5(%(ns)s::text || '/' || {kind} || '/' || d.id || '/' || s.site_id)::uuid::text"


def _run_id(moment: str, listing: bool) -> str:
    """The fetch run of the minute of `moment`: listings have odd ids, telemetry runs even."""
    minutes = f"(extract(epoch FROM {moment} - %(t0)s::timestamptz)::bigint / 60)"
    return f"(2 * {minutes} + {1 if listing else 2})"


def _rfc3339(moment: str) -> str:
    return f"""to_char({moment} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


FETCH_RUNS = [
    "INSERT INTO fetch_runs (id, started_at, finished_at, outcome, kind, listing_requested_at,"
    " dispatches_received, dispatches_created, dispatches_changed, sites_received, rejected,"
    " events, body_fingerprint, clock_offset_seconds)"
    " SELECT 2 * i + 1, %(t0)s::timestamptz + i * interval '1 minute',"
    " %(t0)s::timestamptz + i * interval '1 minute' + interval '1.5 s', 'succeeded', 'listing',"
    " %(t0)s::timestamptz + i * interval '1 minute', 2, 0, 0, 0, 0, 0, md5(i::text), 0.05"
    " FROM generate_series(0, %(minutes)s::int - 1) AS i",
    SERIES + "INSERT INTO fetch_runs (id, started_at, finished_at, outcome, kind,"
    " dispatches_received, dispatches_created, dispatches_changed, sites_received, rejected,"
    f" events) SELECT {_run_id('d.end_time + interval ' + repr('50 minutes'), False)},"
    " d.end_time + interval '50 minutes 20 s', d.end_time + interval '50 minutes 30 s',"
    " 'succeeded', 'telemetry', 0, 0, 0, %(sites)s::int, 0, %(sites)s::int FROM d",
]
FIRST = [
    "INSERT INTO programs (id, name, timezone, market, program_type, first_seen_at, updated_at)"
    " VALUES (1, 'Fleet', 'US/Central', 'MISO', 'capacity', %(t0)s, %(t0)s)",
    "INSERT INTO sites (id, name, customer_location_id, meters, first_seen_at, updated_at,"
    " listed_since) SELECT 's' || s, 'Site ' || s, 'loc' || s, jsonb_build_array("
    "jsonb_build_object('id', 'm' || s, 'name', 'Main', 'asset_type', 'load')),"
    " %(t0)s, %(t0)s, %(t0)s FROM generate_series(0, %(sites)s::int - 1) AS s",
    "INSERT INTO events (id, occurred_at, kind, program_id, fetch_run_id, details)"
    " VALUES (1, %(t0)s::timestamptz + interval '1 s', 'program_seen', 1, 1, jsonb_build_object("
    "'name', 'Fleet', 'timezone', 'US/Central', 'market', 'MISO', 'program_type', 'capacity'))",
    "INSERT INTO events (id, occurred_at, kind, site_id, fetch_run_id, details)"
    " SELECT s + 2, %(t0)s::timestamptz + interval '1 s', 'site_seen', 's' || s, 1,"
    " jsonb_build_object('name', 'Site ' || s, 'customer_location_id', 'loc' || s, 'meters',"
    " jsonb_build_array(jsonb_build_object('id', 'm' || s, 'name', 'Main', 'asset_type', 'load')))"
    " FROM generate_series(0, %(sites)s::int - 1) AS s",
]
DISPATCHES = (
    SERIES + "INSERT INTO dispatches (id, program_id, authorized, test, start_time, end_time,"
    " creation_time, modification_number, metadata, start_date_local, content_hash,"
    " first_seen_at, updated_at)"
    " SELECT d.id, 1, true, false, d.end_time - interval '1 hour', d.end_time,"
    " d.end_time - interval '3 hours 5 minutes', 0, '{\"dispatch_source\": \"year\"}'::jsonb,"
    " to_char((d.end_time - interval '1 hour') AT TIME ZONE 'US/Central', 'YYYY-MM-DD'),"
    " md5(d.id), d.end_time - interval '3 hours', d.end_time - interval '3 hours' FROM d"
)
# the planner leaves an ended dispatch's pairs not holding, after their one episode
DISPATCH_SITES = (
    SERIES + "INSERT INTO dispatch_sites (dispatch_id, site_id, commitment_kw, added_at,"
    f" removed_at, holding, episode) SELECT d.id, s.site_id, {COMMITMENT},"
    " d.end_time - interval '3 hours', NULL, NULL, 1 FROM d CROSS JOIN s"
)
KINDS = "CROSS JOIN (VALUES (0, 'curtail'), (1, 'restore')) AS k(n, kind)"
ACTION_ID = "d.j * 2 * %(sites)s::int + k.n * %(sites)s::int + s.s + 1"
CLAIMED = "CASE k.n WHEN 0 THEN t.c_claim ELSE t.r_claim END"
ACTIONS = (
    SERIES + "INSERT INTO actions (id, dispatch_id, site_id, kind, episode, idempotency_key,"
    " state, attempts, claimed_by, claimed_at, created_at, finished_at, test, commitment_kw)"
    f" SELECT {ACTION_ID}, d.id, s.site_id, k.kind, 1, {_key('k.kind')}, 'succeeded', 1,"
    f" %(worker)s::text, {CLAIMED}, CASE k.n WHEN 0 THEN t.c_plan ELSE t.c_claim + {HANDLED} END,"
    f" {CLAIMED} + {HANDLED}, false, {COMMITMENT} FROM d {KINDS} CROSS JOIN s {TIMES}"
)
SAID = (
    "CASE k.n WHEN 0 THEN '- Customer location loc' || s.s || ' should curtail. Commitment: '"
    f" || {COMMITMENT} || ' kW' ELSE '- Customer location loc' || s.s || ' should restore.' END"
)
ATTEMPTS = (
    SERIES + "INSERT INTO action_attempts (id, action_id, number, worker, started_at,"
    f" finished_at, outcome, output) SELECT {ACTION_ID}, {ACTION_ID}, 1, %(worker)s::text,"
    f" {CLAIMED}, {CLAIMED} + {HANDLED}, 'succeeded', {SAID} FROM d {KINDS} CROSS JOIN s {TIMES}"
)
# the first event id of dispatch j: its dispatch_created, then PHASES x sites of its pairs
EVENT_BLOCK = f"(%(sites)s::int + 2 + d.j * (1 + {PHASES} * %(sites)s::int))"
DISPATCH_CREATED = (
    SERIES + "INSERT INTO events (id, occurred_at, kind, dispatch_id, fetch_run_id, details)"
    f" SELECT {EVENT_BLOCK}, d.end_time - interval '3 hours', 'dispatch_created', d.id,"
    f" {_run_id('(d.end_time - interval ' + repr('3 hours') + ')', True)}, jsonb_build_object("
    "'program_id', 1, 'authorized', true, 'test', false,"
    f" 'start_time', {_rfc3339('(d.end_time - interval ' + repr('1 hour') + ')')},"
    f" 'end_time', {_rfc3339('d.end_time')},"
    f" 'creation_time', {_rfc3339('(d.end_time - interval ' + repr('3 hours 5 minutes') + ')')},"
    " 'modification_number', 0, 'sites', (SELECT jsonb_agg(site_id ORDER BY s) FROM s)) FROM d"
)
# a pair's events (etl.act.actions.event's details; etl.ingest.telemetry's telemetry_received)
PAIR_PHASES = """CROSS JOIN (VALUES
    (0, 'action_planned', 'curtail', 'pending'), (1, 'action_claimed', 'curtail', 'claimed'),
    (2, 'action_succeeded', 'curtail', 'succeeded'), (3, 'action_planned', 'restore', 'waiting'),
    (4, 'action_planned', 'restore', 'pending'), (5, 'action_claimed', 'restore', 'claimed'),
    (6, 'action_succeeded', 'restore', 'succeeded'), (7, 'telemetry_received', NULL, NULL)
) AS p(p, kind, action, state)"""
PAIR_EVENTS = (
    SERIES + "INSERT INTO events (id, occurred_at, kind, dispatch_id, site_id, fetch_run_id,"
    f" details) SELECT {EVENT_BLOCK} + 1 + p.p * %(sites)s::int + s.s, CASE p.p"
    f" WHEN 0 THEN t.c_plan WHEN 1 THEN t.c_claim WHEN 2 THEN t.c_claim + {HANDLED}"
    f" WHEN 3 THEN t.c_claim + {HANDLED} WHEN 4 THEN t.r_due WHEN 5 THEN t.r_claim"
    f" WHEN 6 THEN t.r_claim + {HANDLED} ELSE t.asked + interval '25 s' END, p.kind, d.id,"
    f" s.site_id, CASE p.p WHEN 7 THEN {_run_id('t.asked', False)} END,"
    f" CASE WHEN p.p = 7 THEN jsonb_build_object('readings', {READINGS}, 'filled_gaps', false)"
    " ELSE jsonb_build_object('action', p.action, 'episode', 1, 'idempotency_key',"
    f" {_key('p.action')}, 'state', p.state) || CASE p.state WHEN 'claimed' THEN"
    " jsonb_build_object('worker', %(worker)s::text, 'attempt', 1, 'taken_over', false)"
    " WHEN 'succeeded' THEN jsonb_build_object('attempt', 1) ELSE '{}'::jsonb END END"
    f" FROM d {PAIR_PHASES} CROSS JOIN s {TIMES}"
)
TELEMETRY_REQUESTS = (
    SERIES + "INSERT INTO telemetry_requests (dispatch_id, site_id, asked_at, asks)"
    " SELECT d.id, s.site_id, d.end_time + interval '50 minutes 20 s', 1 FROM d CROSS JOIN s"
)
# a site's load: 20 to 69 kW and some noise, less 1.05 times its commitment from the dispatch's
# second minute to its end (m counts the minutes of the window from its first, 1)
LOAD = (
    f"(20 + s.s %% 50) + ((s.s * 7 + m * 13) %% 11) * 0.1 - 0.5"
    f" - CASE WHEN m > 61 AND m <= 120 THEN 1.05 * {COMMITMENT} ELSE 0 END"
)
TELEMETRY = (
    SERIES + "INSERT INTO telemetry (site_id, meter_id, interval_end, interval_seconds, kw,"
    " fetched_at, fetch_run_id) SELECT s.site_id, 'm' || s.s,"
    f" t.start_time - interval '1 hour' + m * interval '1 minute', {TELEMETRY_INTERVAL}, {LOAD},"
    f" t.asked + interval '25 s', {_run_id('t.asked', False)}"
    f" FROM d CROSS JOIN s CROSS JOIN generate_series(1, {READINGS}) AS m {TIMES}"
)
# the measures etl kept of the dispatches whose readings were pruned since (etl.ingest.measures
# measured them when it stored those readings): what LOAD gives, the response at the second minute
MEASURED = (
    SERIES + "INSERT INTO measured_performance (dispatch_id, site_id, baseline_kw, mean_kw_during,"
    " delivered_kw, delivered_pct, responded_at, response_seconds_from_start,"
    " response_seconds_from_curtail, recovery_seconds_from_restore, coverage)"
    f" SELECT d.id, s.site_id, 20 + s.s %% 50, 20 + s.s %% 50 - 1.05 * {COMMITMENT},"
    f" 1.05 * {COMMITMENT}, 105.0, t.start_time + interval '2 minutes', 120,"
    " extract(epoch FROM t.start_time + interval '2 minutes' - t.c_claim) - 0.05, 58, 1.0"
    f" FROM d CROSS JOIN s {TIMES} WHERE d.j < %(pruned)s::int"
)
COUNTED_TRIGGERS = ("actions", "action_attempts")  # migration 0016's, off while building
LOADED = (
    "fetch_runs",
    "programs",
    "sites",
    "dispatches",
    "dispatch_sites",
    "actions",
    "action_attempts",
    "events",
    "telemetry_requests",
    "telemetry",
    "measured_performance",
)
SERIALS = ("fetch_runs", "events", "actions", "action_attempts")


def expected(days: int, sites: int, telemetry_days: int) -> dict[str, int]:
    """The rows a store of `days` days of `sites` sites holds, table by table."""
    n = 2 * days
    return {
        "programs": 1,
        "sites": sites,
        "fetch_runs": days * 1440 + n,
        "dispatches": n,
        "dispatch_sites": n * sites,
        "actions": 2 * n * sites,
        "action_attempts": 2 * n * sites,
        "events": 1 + sites + n * (1 + PHASES * sites),
        "telemetry_requests": n * sites,
        "telemetry": min(n, 2 * telemetry_days) * sites * READINGS,
        "measured_performance": n * sites,
    }


def build(
    days: int = DAYS,
    sites: int = SITES,
    rebuild: bool = False,
    telemetry_days: int = TELEMETRY_DAYS,
) -> dict[str, float]:
    """The store in `year_fleet`, made unless it holds this history already: the seconds the
    build took (0 when reused) and the rows of each table."""
    made = {"days": days, "sites": sites, "telemetry_days": telemetry_days}
    wanted = expected(days, sites, telemetry_days)
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        built = None if rebuild else _whole(admin, made, wanted)
        if built is not None:
            return {"build_s": 0.0, "measure_s": built["measure_s"], **wanted}
        _say(f"building {SCHEMA}: {days} days, {sites:,} sites, {sum(wanted.values()):,} rows")
        started = time.perf_counter()
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.execute(f"CREATE SCHEMA {SCHEMA}")
    engine = make_engine(URL)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    with psycopg.connect(URL) as conn:
        _fill(conn, days, sites, telemetry_days)
    measure_s = _measure_with_readings(2 * days, sites, telemetry_days)
    with psycopg.connect(URL, autocommit=True) as conn:
        _say("VACUUM ANALYZE (as autovacuum would leave a long-lived store)")
        conn.execute("VACUUM (ANALYZE)")
        seconds = time.perf_counter() - started
        comment = json.dumps(
            {**made, "built_at": utcnow().isoformat(), "build_s": seconds, "measure_s": measure_s}
        )
        conn.execute(f"COMMENT ON SCHEMA {SCHEMA} IS {_literal(comment)}")
    _say(f"built in {seconds:.0f} s")
    return {"build_s": seconds, "measure_s": measure_s, **wanted}


def _fill(conn: psycopg.Connection[Any], days: int, sites: int, telemetry_days: int) -> None:
    """Every table's rows, a chunk of dispatches a transaction, in foreign-key order."""
    now = utcnow().replace(second=0, microsecond=0)
    n, minutes = 2 * days, days * 1440
    conn.execute("SET synchronous_commit = off")
    namespace = conn.execute("SELECT key_namespace FROM store_identity").fetchone()
    assert namespace is not None
    params: dict[str, Any] = {
        "n": n,
        "sites": sites,
        "minutes": minutes,
        "t0": now - timedelta(minutes=minutes - 1),  # the first listing; the last is `now`
        "anchor": now.replace(minute=0) - timedelta(hours=1),  # the newest dispatch's end
        "ns": namespace[0],
        "worker": WORKER,
        "lo": 0,
        "hi": n,
    }
    for table in COUNTED_TRIGGERS:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    remake = _keys_off(conn)
    steps: list[tuple[str, list[str], int, int]] = [  # (what, statements, first j, chunk)
        ("fetch runs", FETCH_RUNS, 0, n),
        ("programs, sites, first events", FIRST, 0, n),
        ("dispatches", [DISPATCHES], 0, n),
        ("dispatch_sites", [DISPATCH_SITES], 0, CHUNK),
        ("actions", [ACTIONS], 0, CHUNK),
        ("action_attempts", [ATTEMPTS], 0, CHUNK),
        ("events", [DISPATCH_CREATED, PAIR_EVENTS], 0, CHUNK),
        ("telemetry_requests", [TELEMETRY_REQUESTS], 0, CHUNK),
        ("telemetry", [TELEMETRY], max(0, n - 2 * telemetry_days), TELEMETRY_CHUNK),
    ]
    params["pruned"] = max(0, n - 2 * telemetry_days)  # dispatches without readings
    steps.append(("measures kept of those without readings", [MEASURED], 0, CHUNK))
    for what, statements, first, chunk in steps:
        started = time.perf_counter()
        for lo in range(first, n, chunk):
            for statement in statements:
                conn.execute(statement, {**params, "lo": lo, "hi": min(n, lo + chunk)})
            conn.commit()
        _say(f"  {what}: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '1GB'")
    for statement in remake:
        conn.execute(statement)
        conn.commit()
    _say(f"  keys, indexes, foreign keys (each checked): {time.perf_counter() - started:.0f} s")
    for table in COUNTED_TRIGGERS:
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    # what the triggers would have counted, and the planner's mark of its last pass
    conn.execute(
        "INSERT INTO store_counts (name, n) VALUES ('finished_succeeded', %(n)s)",
        {"n": 2 * n * sites},
    )
    conn.execute("INSERT INTO planner_state (id, planned_at) VALUES (1, %(now)s)", {"now": now})
    for table in SERIALS:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )
    conn.commit()


def _measure_with_readings(n: int, sites: int, telemetry_days: int) -> float:
    """Measure the dispatches that have readings as a telemetry fetch does (etl.ingest.measures,
    a dispatch a transaction): the median seconds a dispatch of the fleet took."""
    engine = make_engine(URL)
    took = []
    try:
        for j in range(max(0, n - 2 * telemetry_days), n):
            started = time.perf_counter()
            with engine.begin() as conn:
                measures.measure(conn, ((f"year-{j:05}", f"s{s}") for s in range(sites)))
            took.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    _say(f"  measures of {len(took)} dispatches with readings: {sum(took):.0f} s")
    return statistics.median(took) if took else 0.0


def _keys_off(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop the loaded tables' keys and other indexes and the schema's foreign keys, as
    PostgreSQL's manual advises for a bulk load ("Populating a Database"): a foreign key checked
    row by row was two thirds of the time of loading readings. The statements that make them
    again, by the same names and definitions, and check every row (a foreign key in one join)."""
    schema = "connamespace = %(schema)s::regnamespace"
    loaded = {"schema": SCHEMA, "tables": list(LOADED)}
    foreign = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        f" WHERE contype = 'f' AND {schema}",
        loaded,
    ).fetchall()
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        f" WHERE contype IN ('p', 'u') AND {schema} AND conrelid IN (SELECT oid FROM pg_class"
        " WHERE relnamespace = %(schema)s::regnamespace AND relname = ANY(%(tables)s))",
        loaded,
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %(schema)s"
        " AND tablename = ANY(%(tables)s)"
        f" AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE {schema})",
        loaded,
    ).fetchall()
    for table, name, _ in [*foreign, *keys]:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.commit()
    return [
        *(f"ALTER TABLE {table} ADD CONSTRAINT {name} {made}" for table, name, made in keys),
        *(made for _, made in indexes),
        *(f"ALTER TABLE {table} ADD CONSTRAINT {name} {made}" for table, name, made in foreign),
    ]


def _whole(
    admin: psycopg.Connection[Any], made: dict[str, int], wanted: dict[str, int]
) -> dict[str, Any] | None:
    """The schema's comment, written last, if it was built whole with these arguments and holds
    the rows (at least: each measure adds fetch runs and events; dispatches exactly)."""
    row = admin.execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
        (SCHEMA,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    built: dict[str, Any] = json.loads(row[0])
    if any(built.get(name) != value for name, value in made.items()):
        return None
    found = rows(admin)
    if found.get("dispatches") != wanted["dispatches"]:
        return None
    whole = all(found.get(table, 0) >= count for table, count in wanted.items())
    return built if whole else None


def rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The rows of each table that `expected` counts."""
    tables = expected(1, 1, 1)
    found = {}
    for table in tables:
        row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone()
        found[table] = int(row[0]) if row else 0
    return found


def sizes() -> dict[str, int]:
    """Bytes of each table of the schema with its indexes and TOAST (pg_total_relation_size)."""
    with psycopg.connect(POSTGRES) as conn:
        found = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 2 DESC",
            (SCHEMA,),
        ).fetchall()
    return {name: int(size) for name, size in found}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _say(line: str) -> None:
    print(f"year: {line}", file=sys.stderr, flush=True)


# -- measuring ---------------------------------------------------------------------------------


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _command(argv: list[str], env: dict[str, str]) -> float:
    """Seconds for a whole process, its output dropped (`etl status` exits 1 or 2 on purpose)."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _median(runs: int, call: Callable[[], float]) -> float:
    """The median of `runs` calls; one alone when it is over ten times the target."""
    first = call()
    if first > 10 * TARGET_S:
        return first
    return statistics.median([first, *(call() for _ in range(runs - 1))])


def _status(engine: Engine) -> None:
    status.check(engine, timedelta(minutes=5), timedelta(hours=24), status.MIN_DELIVERY)


def _now_page(engine: Engine) -> None:
    """What the console draws for /console/: the verdict of `etl status` atop it (checked again
    once HEALTH_SECONDS old: the page reloads itself every 15 s), then "now and next"."""
    limits = status.Limits()
    limits.check(engine)
    pages.now_and_next(engine, utcnow(), limits.window, limits.act_within, None)


def month_ago() -> datetime:
    return (utcnow() - timedelta(days=30)).replace(microsecond=0)


def _performance(engine: Engine, since: datetime) -> int:
    query = reports.performance_report(reports.ReportFilter(since=since))
    return sum(1 for _ in reports.stream(engine, query))


def _audit(engine: Engine) -> int:
    query = audit.AuditQuery(site_id=AUDITED_SITE)
    audit.require_known(engine, query)
    return sum(1 for _ in audit.trail(engine, query))


# the floors of the two reads that return many rows: the same rows, from hand-written SQL, read
# by psycopg alone (a server-side cursor, as etl's), so that what is over them is etl's own
PERFORMANCE_FLOOR = """SELECT * FROM dispatch_performance WHERE end_time <= now()
    AND start_time >= %(since)s ORDER BY start_time, dispatch_id, site_id"""
AUDIT_FLOOR = """SELECT e.id, e.occurred_at, e.kind, e.dispatch_id, e.site_id, e.program_id,
        e.details, p.timezone
    FROM events e LEFT JOIN dispatches d ON d.id = e.dispatch_id
        LEFT JOIN programs p ON p.id = COALESCE(e.program_id, d.program_id)
    WHERE e.site_id = %(site)s OR (e.site_id IS NULL AND e.dispatch_id IN
        (SELECT dispatch_id FROM dispatch_sites WHERE site_id = %(site)s))
    ORDER BY e.id"""


def _raw_rows(sql: str, since: datetime) -> int:
    with psycopg.connect(URL) as conn, conn.cursor(name="floor") as cursor:
        cursor.itersize = reports.STREAMED_BATCH
        cursor.execute(sql, {"since": since, "site": AUDITED_SITE})
        return sum(1 for _ in cursor)


def reads(since: datetime) -> dict[str, Callable[[Engine], object]]:
    """The library call of each read measured, by name; performance from `since`."""
    return {
        "status": _status,
        "now_page": _now_page,
        "performance_month": partial(_performance, since=since),
        "audit_site": _audit,
    }


def measure(runs: int = 3, command_limit: float | None = 120.0) -> dict[str, float]:
    """Seconds (medians of `runs`) of each command and its library call on the year store, and
    of the minutely run and its floor; the store's bytes by table. A command whose library call
    alone took over `command_limit` seconds is not run (NaN): it cannot be faster."""
    compileall.compile_dir(REPO / "etl", quiet=1)  # as pip leaves an installed package
    env = {**os.environ, "ETL_DATABASE_URL": URL}
    engine = make_engine(URL)
    figures: dict[str, float] = {}
    try:
        figures |= minutely(engine, env, runs)  # first: the store's last fetch is then recent
        since = month_ago()
        commands = {
            "status": [ETL, "status"],
            "performance_month": [ETL, "report", "performance", "--since", since.isoformat()],
            "audit_site": [ETL, "audit", "--site", AUDITED_SITE],
        }
        for name, sql in (("performance_month", PERFORMANCE_FLOOR), ("audit_site", AUDIT_FLOOR)):
            floor = partial(_raw_rows, sql, since)
            figures[f"{name}_rows"] = floor()
            figures[f"{name}_floor"] = _median(runs, partial(_timed, floor))
        for name, call in reads(since).items():
            library = figures[f"{name}_lib"] = _median(runs, partial(_timed, partial(call, engine)))
            if name not in commands:
                continue
            if command_limit is not None and library > command_limit:
                figures[f"{name}_cmd"] = math.nan
            else:
                figures[f"{name}_cmd"] = _median(runs, partial(_command, commands[name], env))
        figures |= console_get(env, runs)
    finally:
        engine.dispose()
    figures |= {f"bytes_{table}": size for table, size in sizes().items()}
    return figures


# the stack floor: benchmarks/floor.py's work in a process that first imports the libraries the
# brief requires of etl's minutely run (SQLAlchemy, requests, Typer, dateutil, psycopg), which
# no run on that stack can do without
STACK_FLOOR = (
    "import sys, runpy, sqlalchemy, requests, typer, dateutil.parser, psycopg;"
    " sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def minutely(engine: Engine, env: dict[str, str], runs: int) -> dict[str, float]:
    """A whole `etl run` against the emulator listing no dispatch, and the run's library call
    (runner.build and run_once), against the cron figure's floor: benchmarks/floor.py, a whole
    process, loading 1,000 dispatches into PostgreSQL (its first load, then reloads); and the
    same `etl run` on an empty store, which tells what the year's history costs it; and the
    stack floor (STACK_FLOOR), the target's."""
    with Sandbox() as sandbox, scratch_url("postgresql") as floor_url:
        sandbox.dispatches = []
        api = ApiSettings(sandbox.url, sandbox.key)
        binding.bind(engine, api)  # the store now serves this emulator (etl/store/binding.py)
        env = {**env, "VOLTUS_API_URL": sandbox.url, "VOLTUS_API_KEY": sandbox.key}
        run = [ETL, "run", "-q"]
        subprocess.run(run, env=env, check=True, capture_output=True)  # planner's first look
        etl_s = _median(runs, lambda: _command(run, env))

        def library_run() -> None:
            parts = runner.build(ProcessorSettings(), URL, sandbox.url, api)
            try:
                list(runner.run_once(parts))
            finally:
                parts.engine.dispose()

        library_s = _median(runs, lambda: _timed(library_run))
        listing = ingest.Api()
        listing.serve(ingest.synthetic(1000))
        command = [sys.executable, str(REPO / "benchmarks" / "floor.py"), listing.url, floor_url]
        floor_s = _median(runs, lambda: _command(command, dict(os.environ)))
        stacked = [sys.executable, "-c", STACK_FLOOR, *command[1:]]
        stack_s = _median(runs, lambda: _command(stacked, dict(os.environ)))
        listing.server.shutdown()
        with fresh_database("postgresql") as empty:  # what the history adds, if anything
            bare = {**env, "ETL_DATABASE_URL": empty.url.render_as_string(hide_password=False)}
            subprocess.run(run, env=bare, check=True, capture_output=True)
            empty_s = _median(runs, lambda: _command(run, bare))
    return {
        "run_cmd": etl_s,
        "run_lib": library_s,
        "run_floor": floor_s,
        "run_stack_floor": stack_s,
        "run_empty": empty_s,
    }


def console_get(env: dict[str, str], runs: int) -> dict[str, float]:
    """A whole `etl console` serving the year store: seconds of its first GET /console/ (the
    templates compiled then) and the median of the next `runs`, each once the verdict atop
    the page is due again (as the page's own reload finds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{probe.getsockname()[1]}"
    console = subprocess.Popen(
        [ETL, "console", "--listen", listen, "-q"], env=env, stdout=subprocess.DEVNULL
    )
    page = f"http://{listen}/console/"

    def fresh_get() -> float:
        """A GET once the verdict atop the page is due to be checked again."""
        time.sleep(HEALTH_SECONDS)
        return _timed(lambda: _get(page))

    try:
        deadline = time.monotonic() + 60
        while not _listening(listen) and time.monotonic() < deadline:
            time.sleep(0.1)
        first = _timed(lambda: _get(page))
        later = _median(runs, fresh_get)
    finally:
        console.terminate()
        console.wait(timeout=60)
    return {"now_page_get_first": first, "now_page_get": later}


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=600) as response:
        response.read()


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


# -- why ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slow:
    ms: float  # its execution time under EXPLAIN ANALYZE
    statement: str
    plan: list[str]


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Each statement the engine executes in the block, with its parameters."""
    ran: list[tuple[str, Any]] = []

    def before(_c: Any, _cur: Any, statement: str, parameters: Any, _x: Any, many: bool) -> None:
        if not many:
            ran.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield ran
    finally:
        event.remove(engine, "before_cursor_execute", before)


def slow_statements(engine: Engine, call: Callable[[Engine], object], over_ms: float) -> list[Slow]:
    """The SELECTs `call` ran that take over `over_ms` each, slowest first, with their plans:
    each run again under EXPLAIN (ANALYZE, BUFFERS), in a transaction rolled back."""
    with _statements(engine) as ran:
        call(engine)
    found: dict[str, Slow] = {}
    with engine.connect() as conn:
        for statement, parameters in ran:
            if not re.match(r"\s*(SELECT|WITH)\b", statement) or statement in found:
                continue
            plan = conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters
            ).scalars()
            lines = list(plan)
            ms = float(re.findall(r"Execution Time: ([\d.]+) ms", lines[-1])[0])
            found[statement] = Slow(ms, statement, lines)
        conn.rollback()
    return sorted((s for s in found.values() if s.ms > over_ms), key=lambda s: -s.ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--sites", type=int, default=SITES)
    parser.add_argument("--telemetry-days", type=int, default=TELEMETRY_DAYS)
    parser.add_argument("--rebuild", action="store_true", help="build again even if whole")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; medians")
    parser.add_argument("--explain", action="store_true", help="the slow reads' plans too")
    parser.add_argument(
        "--command-limit",
        type=float,
        default=120.0,
        help="seconds of a library call past which its whole command is not run (0: no limit)",
    )
    args = parser.parse_args()
    from benchmarks import run

    limit = args.command_limit or None
    run.year_history(args.days, args.sites, args.rebuild, args.telemetry_days, args.runs, limit)
    if args.explain:  # performance over its last day: the month's plan, a thirtieth of its rows
        engine = make_engine(URL)
        for name, call in reads(utcnow() - timedelta(days=1)).items():
            for slow in slow_statements(engine, call, over_ms=100):
                print(f"\n-- {name}: {slow.ms:,.0f} ms\n{slow.statement}\n" + "\n".join(slow.plan))
        engine.dispose()


if __name__ == "__main__":
    main()
