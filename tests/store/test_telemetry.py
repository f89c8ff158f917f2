"""Telemetry around each dispatch: batched and split to the API's limits (which the emulator
enforces), gaps refilled, bad readings set aside, nothing trusted before 20 minutes."""

import io
import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, func, insert, select, text, update

from etl.base.timeutil import format_rfc3339, parse_rfc3339, utcnow
from etl.ingest import dispatches, measures, telemetry
from etl.read import chart, output, reports, status
from etl.sandbox import emulator
from etl.sandbox.emulator import Sandbox, SiteCommand
from etl.source.records import MAX_KW, MIN_READING_KW
from etl.store import rows, schema
from etl.store.migrate import migrate
from tests.helpers import log_messages, site
from tests.processes import InProcess
from tests.scenarios import World, active

CHECK = (timedelta(days=1), timedelta(hours=24))  # fresh enough: only delivery is judged
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ago(minutes: float) -> str:
    return format_rfc3339(utcnow() - timedelta(minutes=minutes))


def ended(dispatch_id: str, *sites: dict[str, object], start: float, end: float) -> dict:
    return active(dispatch_id, *sites, start_time=ago(start), end_time=ago(end))


def delivered_in_time(sandbox: Sandbox, *shown: dict[str, Any]) -> None:
    """Each site's controller took its curtail at its dispatch's start and its restore at the
    end (the emulated load drops only then: tests/store/test_rehearsal.py)."""
    sandbox.commands = [
        SiteCommand(kind, s["id"], d["id"], s["commitment"], parse_rfc3339(d[time]))
        for d in shown
        for s in d["sites"]
        for kind, time in (("curtail", "start_time"), ("restore", "end_time"))
    ]


def stored(world: World) -> dict[str, int]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            select(schema.telemetry.c.site_id, func.count()).group_by(schema.telemetry.c.site_id)
        ).all()
    return dict(rows)


def events(world: World, kind: str) -> list[dict[str, object]]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            select(schema.events.c.site_id, schema.events.c.details)
            .where(schema.events.c.kind == kind)
            .order_by(schema.events.c.id)
        ).all()
    return [{"site": row.site_id, **row.details} for row in rows]


def test_eleven_sites_and_a_long_window_are_batched_and_split(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the point limit, small for the test (the emulator enforces the same one)
    monkeypatch.setattr(telemetry, "MAX_POINTS", 60)
    monkeypatch.setattr(emulator, "TELEMETRY_MAX_POINTS", 60)
    sites = [site(f"s{i:02}") for i in range(11)]
    world.step(ended("d1", *sites, start=150, end=90))  # a window of 60 + 60 + 30 minutes
    with world.engine.connect() as conn:
        (window,) = telemetry.windows_due(conn, utcnow(), telemetry.DEFAULT_LOOKBACK)
    assert 150 <= window.intervals <= 151  # its ends are aligned outwards to 30 s
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    assert summary.windows == 1 and summary.requests == 2 * 3  # 10 + 1 sites; 3 spans of 60
    assert summary.rejected == 0
    counts = stored(world)
    assert set(counts) == {f"s{i:02}" for i in range(11)}
    assert set(counts.values()) == {window.intervals}
    asked = [r for r in world.sandbox.requests if "telemetry/kw" in r]
    assert max(r.count("site_id=") for r in asked) == 10
    assert len(events(world, "telemetry_received")) == 11
    again = telemetry.fetch_telemetry(world.engine, world.client)
    assert again.windows == 0 and again.requests == 0  # complete: not asked for again


def telemetry_runs(world: World) -> list[tuple[int, str, dict[str, int]]]:
    """Each telemetry fetch run: its id, its outcome and the readings that point to it, by site."""
    runs, readings = schema.fetch_runs.c, schema.telemetry.c
    with world.engine.connect() as conn:
        rows = conn.execute(
            select(runs.id, runs.outcome, readings.site_id, func.count(readings.site_id))
            .outerjoin(schema.telemetry, readings.fetch_run_id == runs.id)
            .where(runs.kind == "telemetry")
            .group_by(runs.id, runs.outcome, readings.site_id)
            .order_by(runs.id, readings.site_id)
        ).all()
    found: dict[tuple[int, str], dict[str, int]] = {}
    for run_id, outcome, site_id, count in rows:
        by_site = found.setdefault((run_id, outcome), {})
        if site_id is not None:
            by_site[site_id] = count
    return [(run_id, outcome, by_site) for (run_id, outcome), by_site in found.items()]


def test_a_pass_of_more_readings_than_a_transaction_holds_is_stored_in_parts_of_whole_sites(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one write lock: a fleet's readings in one transaction held it for half a
    minute, and the processor's claims waiting for it failed. A part is whole sites, in both
    of their windows when they have two; here, a site a part."""
    monkeypatch.setattr(telemetry, "TRANSACTION_READINGS", 1)
    sites = [site(f"s{i}") for i in range(5)]
    world.step(
        ended("d1", *sites, start=150, end=120),
        ended("d2", *sites[:2], start=90, end=60),  # s0 and s1 in two windows
    )
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    runs = telemetry_runs(world)
    counts = stored(world)
    assert [(outcome, by_site) for _, outcome, by_site in runs] == [
        ("succeeded", {f"s{i}": counts[f"s{i}"]}) for i in range(5)
    ]
    assert counts["s0"] > counts["s2"] > 0  # s0's part holds both its windows
    assert summary.fetch_run_id == runs[-1][0] and summary.windows == 2
    assert summary.readings_new == sum(counts.values())
    assert len(summary.events) == len(events(world, "telemetry_received")) == 7  # a pair each
    again = telemetry.fetch_telemetry(world.engine, world.client)
    assert again.windows == 0 and again.requests == 0  # every site asked for and stored


def test_a_pass_that_dies_between_parts_keeps_those_stored_and_asks_again_for_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "TRANSACTION_READINGS", 1)  # a site a part
    world.step(ended("d1", *(site(f"s{i}") for i in range(4)), start=150, end=120))
    store, parts = telemetry._store, list[telemetry.TelemetrySummary]()

    def dies_at_the_third_part(*args: Any) -> telemetry.TelemetrySummary:
        if len(parts) == 2:
            raise RuntimeError("killed")
        parts.append(store(*args))
        return parts[-1]

    monkeypatch.setattr(telemetry, "_store", dies_at_the_third_part)
    with pytest.raises(RuntimeError):
        telemetry.fetch_telemetry(world.engine, world.client)
    assert set(stored(world)) == {"s0", "s1"}
    monkeypatch.setattr(telemetry, "_store", store)
    asked = len(world.sandbox.requests)
    again = telemetry.fetch_telemetry(world.engine, world.client)
    (request,) = world.sandbox.requests[asked:]
    assert "site_id=s2&site_id=s3" in request and "s0" not in request and "s1" not in request
    assert again.error is None and set(stored(world)) == {"s0", "s1", "s2", "s3"}
    assert len(set(stored(world).values())) == 1  # every site's window, whole
    assert len(events(world, "telemetry_received")) == 4  # each site's once
    assert [outcome for _, outcome, _ in telemetry_runs(world)] == [
        "succeeded",
        "succeeded",
        "failed",  # the pass that died, recorded as it died
        "succeeded",
        "succeeded",
    ]


def test_the_windows_due_are_found_in_one_query_whatever_their_number(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty windows of the same three sites, stored whole but for the last reading of site b:
    one query lists the candidates, and one per chunk of (window, site) pairs counts what each
    has stored (120 pairs, 100 to a chunk here)."""
    monkeypatch.setattr(rows, "IN_CHUNK", 100)
    world.step(
        *(ended(f"d{i:02}", site("a"), site("b"), site("c"), start=150, end=90) for i in range(40))
    )
    telemetry.fetch_telemetry(world.engine, world.client)  # all 40 stored whole
    with world.engine.begin() as conn:  # site b loses its last reading
        conn.execute(
            delete(schema.telemetry).where(
                schema.telemetry.c.site_id == "b",
                schema.telemetry.c.interval_end
                == select(func.max(schema.telemetry.c.interval_end)).scalar_subquery(),
            )
        )
        conn.execute(delete(schema.telemetry_requests))  # each may be asked again at once
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(world.engine, "before_cursor_execute", listen)
    try:
        with world.engine.connect() as conn:
            due = telemetry.windows_due(conn, utcnow(), telemetry.DEFAULT_LOOKBACK)
    finally:
        event.remove(world.engine, "before_cursor_execute", listen)
    assert [(w.site_ids) for w in due] == [("b",)] * 40  # the latest interval of b, everywhere
    queries = [s for s in statements if s.startswith(("SELECT", "WITH"))]
    assert len(queries) == 1 + 2, queries


def test_the_load_drops_by_the_commitment_while_the_site_is_curtailed(world: World) -> None:
    held = ended("d1", site("a", commitment=40), start=90, end=30)
    world.step(held)
    delivered_in_time(world.sandbox, held)
    telemetry.fetch_telemetry(world.engine, world.client)
    with world.engine.connect() as conn:
        readings = dict(
            conn.execute(select(schema.telemetry.c.interval_end, schema.telemetry.c.kw)).all()
        )
    start = utcnow() - timedelta(minutes=90)
    minute = timedelta(minutes=1)
    before = [kw for at, kw in readings.items() if at < start - 5 * minute]
    during = [kw for at, kw in readings.items() if start + 5 * minute < at < start + 50 * minute]
    assert before and during
    drop = sum(before) / len(before) - sum(during) / len(during)
    assert 38 < drop < 42


def as_if_asked_earlier(world: World, by: timedelta) -> None:
    """Move every window's last ask back in time, as if the next pass came that much later."""
    asked = schema.telemetry_requests.c
    with world.engine.begin() as conn:
        for row in conn.execute(select(schema.telemetry_requests)).all():
            conn.execute(
                schema.telemetry_requests.update()
                .where(asked.dispatch_id == row.dispatch_id, asked.site_id == row.site_id)
                .values(asked_at=row.asked_at - by)
            )


def reading(at: datetime) -> dict[str, object]:
    return {"meter_id": "m1", "timestamp": format_rfc3339(at), "value": 50.0}


def test_gaps_are_refilled_and_bad_readings_set_aside(world: World) -> None:
    world.step(ended("d1", site("a"), start=70, end=60))  # its window ended 30 minutes ago
    start = datetime.fromisoformat(ago(140)).replace(second=0, microsecond=0, tzinfo=UTC)
    every_minute = [start + timedelta(minutes=m) for m in range(1, 200)]
    readings = [reading(at) for at in every_minute if at.minute % 10]  # one in ten missing
    bad = [
        {
            "meter_id": "m1",
            "timestamp": format_rfc3339(every_minute[60]),
            "value": 1,
            "units": "MW",
        },
        {"meter_id": "m1", "timestamp": "yesterday", "value": 1},
        {**reading(every_minute[61]), "value": float("nan")},  # sent as NaN
        {**reading(every_minute[62]), "value": float("inf")},  # sent as Infinity
        # beyond any site's load: 1e308 overflowed the reports' sums
        {**reading(every_minute[63]), "value": 1e308},
        {**reading(every_minute[64]), "value": -1e308},
        {**reading(every_minute[65]), "value": 10**400},  # an integer no float holds
        {**reading(every_minute[66]), "value": 1_000_001},
        {**reading(every_minute[67]), "value": 5e-324},  # underflowed PostgreSQL's reports
    ]
    world.sandbox.telemetry = {"a": readings + bad}
    first = telemetry.fetch_telemetry(world.engine, world.client)
    assert first.readings_new > 0 and first.rejected == 9
    with world.engine.connect() as conn:
        kinds = conn.execute(select(schema.rejected_records.c.kind)).scalars().all()
    assert kinds == ["telemetry"] * 9
    # the missing minutes arrive late; they are asked for again an hour later, not at once
    world.sandbox.telemetry = {"a": [reading(at) for at in every_minute]}
    assert telemetry.fetch_telemetry(world.engine, world.client).requests == 0
    as_if_asked_earlier(world, timedelta(hours=1))
    second = telemetry.fetch_telemetry(world.engine, world.client)
    assert second.readings_new > 0 and second.readings_changed == 0
    received = events(world, "telemetry_received")
    assert [e["filled_gaps"] for e in received] == [False, True]
    assert telemetry.fetch_telemetry(world.engine, world.client).windows == 0


def test_nothing_is_trusted_before_twenty_minutes(world: World) -> None:
    world.step(
        ended("recent", site("a"), start=60, end=10), ended("older", site("b"), start=60, end=25)
    )
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    assert summary.windows == 1  # only `older` ended 20 minutes ago or more
    with world.engine.connect() as conn:
        latest = conn.execute(select(func.max(schema.telemetry.c.interval_end))).scalar_one()
    assert latest <= utcnow() - timedelta(minutes=20)
    # its window runs to its end + 30 min: still incomplete, asked for again at the next pass
    assert telemetry.fetch_telemetry(world.engine, world.client).windows == 1


def test_a_refused_window_waits_while_the_others_are_stored(world: World) -> None:
    listing = [ended("d1", site("a"), start=150, end=120), ended("d2", site("b"), start=90, end=60)]
    later = ended("d3", site("c"), start=60, end=30)
    delivered_in_time(world.sandbox, *listing, later)  # so that status judges telemetry alone
    world.step(*listing)
    world.sandbox.faults.statuses = [400]  # d1's request: the earliest window goes first
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    assert summary.windows == 1 and summary.failed_windows == 1
    assert summary.error and summary.error.startswith("telemetry of dispatch d1: GET ")
    assert "HTTP 400" in summary.error
    assert set(stored(world)) == {"b"}
    report = status.check(world.engine, *CHECK)
    assert report.code == status.Health.WARNING and report.telemetry_error == summary.error
    assert report.problems == [f"WARNING: telemetry is not being fetched: {summary.error}"]
    world.step(*listing, later)
    between = telemetry.fetch_telemetry(world.engine, world.client)  # d1 is not asked yet
    assert between.windows == 1 and between.error is None and set(stored(world)) == {"b", "c"}
    report = status.check(world.engine, *CHECK)  # a pass succeeded, but d1 is still refused
    assert report.code == status.Health.WARNING
    assert report.telemetry_error == "telemetry of dispatch d1, site a: " + summary.error.split(
        ": ", 1
    )[1].removesuffix(" (1 windows not fetched)")
    as_if_asked_earlier(world, timedelta(hours=1))  # a refused window is asked again later too
    again = telemetry.fetch_telemetry(world.engine, world.client)
    assert again.windows == 2 and again.error is None  # d1, and d3 not all settled yet
    assert set(stored(world)) == {"a", "b", "c"}
    assert status.check(world.engine, *CHECK).code == status.Health.OK  # answered since


def test_a_window_that_stays_incomplete_is_asked_again_at_growing_intervals(
    world: World,
) -> None:
    world.step(ended("d1", site("quiet"), start=150, end=120))
    world.sandbox.telemetry = {"quiet": []}  # a site whose meter never reports
    asked_at = []
    for _ in range(6):
        summary = telemetry.fetch_telemetry(world.engine, world.client)
        assert telemetry.fetch_telemetry(world.engine, world.client).requests == 0  # not at once
        with world.engine.connect() as conn:
            (row,) = conn.execute(select(schema.telemetry_requests)).all()
        asked_at.append((summary.requests, row.asks))
        as_if_asked_earlier(world, telemetry.reask_at(row.asked_at, row.asks) - row.asked_at)
    assert asked_at == [(1, asks) for asks in range(1, 7)]
    hours = [telemetry.reask_at(NOW, asks) - NOW for asks in (1, 2, 3, 4, 5, 6, 10**6)]
    assert [h / timedelta(hours=1) for h in hours] == [1, 2, 4, 8, 12, 12, 12]


def test_an_unreachable_api_ends_the_pass_at_once(world: World) -> None:
    world.step(ended("d1", site("a"), start=150, end=120), ended("d2", site("b"), start=90, end=60))
    asked = len(world.sandbox.requests)
    world.sandbox.faults.statuses = [503] * 4  # every attempt of the first request
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    assert summary.windows == 0 and summary.failed_windows == 2
    assert summary.error and "failed after 4 attempts" in summary.error
    assert len(world.sandbox.requests) == asked + 4  # d2 was not asked for
    with world.engine.connect() as conn:
        run = conn.execute(
            select(schema.fetch_runs).where(schema.fetch_runs.c.kind == "telemetry")
        ).one()
    assert run.outcome == "failed" and run.error == summary.error
    assert stored(world) == {}


def test_fetch_telemetry_from_the_command(cli: InProcess, sandbox: Sandbox) -> None:
    sandbox.dispatches = [ended("d1", site("a"), site("b"), start=120, end=60)]
    result = cli("fetch", "--telemetry")
    assert result.returncode == 0, result.stderr
    (line,) = [m for m in log_messages(result.stderr, "INFO") if m.startswith("telemetry ")]
    assert ": 1 windows, 1 requests: " in line and " 0 changed, 0 rejected" in line
    assert int(line.split("requests: ")[1].split()[0]) >= 2 * 150
    again = cli("fetch", "--telemetry", "--lookback", "30m")  # the dispatch ended before that
    assert ": 0 windows, 0 requests: 0 readings new" in again.stderr


def test_a_refused_window_fails_the_command_in_one_line(cli: InProcess, sandbox: Sandbox) -> None:
    sandbox.dispatches = [ended("d1", site("a"), start=120, end=60)]
    sandbox.faults.statuses, sandbox.faults.statuses_path = [404], "/2022-04-15/telemetry"
    result = cli("fetch", "--telemetry")
    assert result.returncode == 3
    (error,) = log_messages(result.stderr, "ERROR")
    assert error.startswith("telemetry of dispatch d1: GET ") and "HTTP 404" in error
    assert "(1 windows not fetched)" in error and "Traceback" not in result.stderr
    assert any(m.startswith("telemetry ") for m in log_messages(result.stderr, "INFO"))


def hand_computed(
    world: World,
    curtailed_kw: float,
    commitment: float = 20,
    base_kw: float = 100.0,
    dispatch_id: str = "p1",
    site_id: str = "a",
) -> tuple[datetime, datetime]:
    """A 30-minute dispatch committed at 20 kW, ended 2.5 hours ago, with the commands' records:
    the load is 100 kW, falls to `curtailed_kw` from its 3rd minute, and comes back 5 minutes
    after its end; 12 of the window's 120 intervals are missing (108 readings are fetched, when
    the values are a site's)."""
    start = utcnow().replace(second=0, microsecond=0) - timedelta(hours=3)
    end = start + timedelta(minutes=30)
    second, minute = timedelta(seconds=1), timedelta(minutes=1)
    load = {start + m * minute: base_kw for m in range(-59, 1)}  # before: the baseline
    load |= {start + m * minute: (base_kw if m <= 2 else curtailed_kw) for m in range(1, 31)}
    load |= {end + m * minute: (curtailed_kw if m <= 4 else base_kw) for m in range(1, 31)}
    for m in range(10, 22):
        del load[end + m * minute]
    world.sandbox.dispatches = [
        active(
            dispatch_id,
            site(site_id, commitment=commitment),
            start_time=format_rfc3339(start),
            end_time=format_rfc3339(end),
        )
    ]
    world.sandbox.telemetry = {site_id: [{**reading(at), "value": kw} for at, kw in load.items()]}
    if not dispatches.fetch(world.engine, world.client).dispatches_created:
        return start, end  # set aside: its commitment is no site's
    with world.engine.begin() as conn:  # the commands, as the processor would have recorded them
        for kind, done in (("curtail", start + 30 * second), ("restore", end + 60 * second)):
            conn.execute(
                insert(schema.actions).values(
                    dispatch_id=dispatch_id, site_id=site_id, kind=kind, episode=1,
                    idempotency_key=f"key-{dispatch_id}-{kind}", state="succeeded", attempts=1,
                    created_at=start, finished_at=done,
                )
            )  # fmt: skip
    fetched = telemetry.fetch_telemetry(world.engine, world.client)
    if all(kw == 0 or MIN_READING_KW <= abs(kw) <= MAX_KW for kw in (base_kw, curtailed_kw)):
        assert fetched.readings_new == 108
    else:
        assert fetched.rejected > 0  # the loads beyond any site's
    return start, end


EXTREME = st.one_of(
    st.sampled_from([0.0, 5e-324, -5e-324, 0.001, 1e6, -1e6, 1e6 + 1, 1e308, -1e308]),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(
    max_examples=int(os.environ.get("ETL_FUZZ_EXAMPLES", "12")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commitment=EXTREME, base_kw=EXTREME, curtailed_kw=EXTREME)
def test_no_number_breaks_a_report(
    world: World, commitment: float, base_kw: float, curtailed_kw: float
) -> None:
    """Whatever the API says of a commitment and a site's load, status, the performance report
    and its JSON and CSV come out, the JSON strict (before: overflow on PostgreSQL, -Infinity in
    JSON on SQLite)."""
    dispatch_id = f"x{next(FUZZED)}"
    hand_computed(world, curtailed_kw, commitment, base_kw, dispatch_id, f"{dispatch_id}-a")
    status.check(world.engine, *CHECK)
    query = reports.performance_report(reports.ReportFilter())  # this one and all before
    rows = list(reports.stream(world.engine, query))
    for fmt in ("json", "csv"):
        out = io.StringIO()
        output.write(iter(rows), list(rows[0]) if rows else ["dispatch_id"], out, fmt)
        if fmt == "json":
            json.loads(out.getvalue(), parse_constant=_not_strict)


FUZZED = itertools.count()


def _not_strict(constant: str) -> None:
    raise AssertionError(f"not strict JSON: {constant}")


def test_the_performance_view_on_a_hand_computed_series(world: World) -> None:
    start, _ = hand_computed(world, curtailed_kw=75)
    minute = timedelta(minutes=1)

    (row,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))

    assert row["baseline_kw"] == pytest.approx(100)
    assert row["mean_kw_during"] == pytest.approx((2 * 100 + 28 * 75) / 30)
    assert row["delivered_kw"] == pytest.approx(100 - 2300 / 30)
    assert row["delivered_pct"] == pytest.approx(100 * (100 - 2300 / 30) / 20)
    assert row["responded_at"] == start + 3 * minute  # the first interval at or under 90 kW
    assert row["response_seconds_from_start"] == pytest.approx(180)
    assert row["response_seconds_from_curtail"] == pytest.approx(150)
    assert row["recovery_seconds_from_restore"] == pytest.approx(240)
    assert row["coverage"] == pytest.approx(108 / 120)
    assert status.check(world.engine, *CHECK).under_delivered == []


def test_a_load_down_to_its_line_has_answered(world: World) -> None:
    """The line is the baseline less half the commitment (100 - 20 / 2): a load at 90 kW is on
    it, which counts as answered."""
    start, _ = hand_computed(world, curtailed_kw=90)
    (row,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    assert row["responded_at"] == start + timedelta(minutes=3)
    assert row["recovery_seconds_from_restore"] == pytest.approx(240)


def measured_now(world: World, view: str) -> list[tuple[Any, ...]]:
    """The view's rows, its numbers as floats (PostgreSQL computes some as numeric)."""
    with world.engine.connect() as conn:
        found = conn.execute(text(f"SELECT * FROM {view} ORDER BY 1, 2"))
        return [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in found]


def test_the_measures_kept_are_taken_again_when_a_later_fetch_fills_a_gap(world: World) -> None:
    """dispatch_performance reads the measures kept when the readings were stored: the same as
    performance_from_readings computes from them, and taken again when a gap is filled."""
    hand_computed(world, curtailed_kw=75)
    assert measured_now(world, "dispatch_performance") == measured_now(
        world, "performance_from_readings"
    )
    (row,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    assert row["coverage"] == pytest.approx(108 / 120)
    end = row["end_time"]
    minute = timedelta(minutes=1)
    world.sandbox.telemetry["a"] += [
        {**reading(end + m * minute), "value": 100.0} for m in range(10, 22)
    ]
    with world.engine.begin() as conn:
        conn.execute(delete(schema.telemetry_requests))  # asked again now, not in an hour
    assert telemetry.fetch_telemetry(world.engine, world.client).readings_new == 12
    (row,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    assert row["coverage"] == pytest.approx(1.0)
    assert measured_now(world, "dispatch_performance") == measured_now(
        world, "performance_from_readings"
    )


MINUTES = st.integers(min_value=-75, max_value=24 * 60 + 40)  # from the start
METERS = st.lists(  # as GET /sites lists them: an id may come twice, a type in no role
    st.tuples(
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from(["load", "poi", "generator", "battery", "pv"]),
    ),
    max_size=4,
)


def same_measures(found: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    assert len(found) == len(expected)
    for row, wanted in zip(found, expected, strict=True):
        for value, other in zip(row, wanted, strict=True):
            if isinstance(other, float):
                assert value == pytest.approx(other, rel=1e-9, abs=1e-9), (row, wanted)
            else:
                assert value == other, (row, wanted)


@settings(
    max_examples=int(os.environ.get("ETL_FUZZ_EXAMPLES", "12")) * 2,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    meters=METERS,
    readings=st.lists(
        st.tuples(
            st.sampled_from(["m1", "m2", "m3"]),
            MINUTES,
            # a load on a site's line (100 kW less half of 20) as often as any
            st.one_of(st.sampled_from([0, 80, 90, 100]), st.integers(-50, 150)),
        ),
        max_size=80,
    ),
    commitment=st.sampled_from([None, 0.0, 20.0, 70.0]),
    restored=st.one_of(st.none(), st.integers(-10, 24 * 60 * 60)),
)
def test_the_measures_kept_are_those_the_view_computes_from_the_readings(
    world: World,
    meters: list[tuple[str, str]],
    readings: list[tuple[str, int, int]],
    commitment: float | None,
    restored: int | None,
) -> None:
    """etl.ingest.measures and the view performance_from_readings say the same of any readings:
    meters listed twice or not at all, a POI, generation and storage, gaps, a restore at any
    second, a recovery found a day later, no commitment or one of 0."""
    with world.engine.connect() as conn:  # the first example makes the dispatch
        start = conn.execute(select(schema.dispatches.c.start_time)).scalar()
    if start is None:
        start, _ = hand_computed(world, curtailed_kw=75)
    minute = timedelta(minutes=1)
    rows_kept = {(meter, start + m * minute): kw for meter, m, kw in readings}
    with world.engine.begin() as conn:
        conn.execute(delete(schema.telemetry))
        listed = [{"id": m, "name": m, "asset_type": kind} for m, kind in meters]
        conn.execute(update(schema.sites).where(schema.sites.c.id == "a").values(meters=listed))
        conn.execute(
            update(schema.dispatch_sites)
            .where(schema.dispatch_sites.c.site_id == "a")
            .values(commitment_kw=commitment)
        )
        done = None if restored is None else start + timedelta(seconds=restored, milliseconds=700)
        conn.execute(
            update(schema.actions)
            .where(schema.actions.c.kind == "restore")
            .values(finished_at=done, state="succeeded" if done else "failed")
        )
        run = conn.execute(select(func.min(schema.fetch_runs.c.id))).scalar()
        rows.write_many(
            conn,
            insert(schema.telemetry),
            [
                dict(site_id="a", meter_id=meter, interval_end=at, interval_seconds=60, kw=kw,
                     fetched_at=start, fetch_run_id=run)
                for (meter, at), kw in rows_kept.items()
            ],
        )  # fmt: skip
        measures.measure(conn, [("p1", "a")])
    same_measures(
        measured_now(world, "dispatch_performance"),
        measured_now(world, "performance_from_readings"),
    )


def test_a_store_upgraded_to_keep_measures_has_its_history_measured_by_etl_db_measure(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store from before revision 0029 computed the measures at each read. The upgrade leaves
    the table empty (measuring a large history there would stop etl for hours); `etl db
    measure` then gives the same rows as before."""
    hand_computed(world, curtailed_kw=75)
    hand_computed(world, curtailed_kw=50, dispatch_id="p2", site_id="b")
    migrate(world.engine, "0028", downgrade=True)
    computed = measured_now(world, "dispatch_performance")
    assert [row[:2] for row in computed] == [("p1", "a"), ("p2", "b")]
    migrate(world.engine)
    assert [row[-3] for row in measured_now(world, "dispatch_performance")] == [
        0.0,
        0.0,
    ]  # coverage
    cli = InProcess(monkeypatch, capsys, world.engine.url.render_as_string(hide_password=False))
    assert cli.ok("db", "measure") == "measured 2 dispatch sites; none left to measure\n"
    assert measured_now(world, "dispatch_performance") == computed


def test_a_measure_lost_before_it_was_written_is_taken_at_the_next_fetch(world: World) -> None:
    """The readings and the measures are written in transactions of their own: a pair whose
    readings are stored and its measure not (a crash between them) is due, and measured."""
    hand_computed(world, curtailed_kw=75)
    expected = measured_now(world, "dispatch_performance")
    with world.engine.begin() as conn:
        conn.execute(delete(schema.measured_performance))
    again = telemetry.fetch_telemetry(world.engine, world.client)
    assert (again.measured, again.measures_due) == (1, 0)
    assert measured_now(world, "dispatch_performance") == expected


def test_readings_fetched_for_a_later_dispatch_measure_an_earlier_one_again(
    world: World,
) -> None:
    """p2 starts 20 minutes after p1 ends: p2's baseline hour holds the end of p1's window.
    Readings of p1's window missing at its fetch and brought by p2's are measured into p1's."""
    _, end = hand_computed(world, curtailed_kw=75)  # 12 intervals after p1's end missing
    minute = timedelta(minutes=1)
    later = end + 20 * minute
    world.sandbox.dispatches.append(
        active("p2", site("a"), start_time=format_rfc3339(later),
               end_time=format_rfc3339(later + 30 * minute))
    )  # fmt: skip
    world.sandbox.telemetry["a"] += [
        {**reading(end + m * minute), "value": 100.0} for m in range(10, 22)
    ]
    (before,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    assert before["coverage"] == pytest.approx(108 / 120)
    dispatches.fetch(world.engine, world.client)
    with world.engine.begin() as conn:  # p1's window, whole but for its gap, is not asked again
        conn.execute(update(schema.telemetry_requests).values(asked_at=utcnow()))
    fetched = telemetry.fetch_telemetry(world.engine, world.client)
    assert fetched.readings_new > 0
    rows = list(reports.stream(world.engine, reports.performance_report(reports.ReportFilter())))
    assert rows[0]["dispatch_id"] == "p1" and rows[0]["coverage"] == pytest.approx(1.0)
    assert measured_now(world, "dispatch_performance") == measured_now(
        world, "performance_from_readings"
    )


def test_the_physical_extremes_break_no_report(world: World) -> None:
    """Loads at the bounds (±1,000,000 kW) and a commitment of a watt: before, 1e308 and 5e-324
    overflowed status on PostgreSQL and wrote -Infinity into JSON on SQLite."""
    hand_computed(world, curtailed_kw=-1_000_000, commitment=0.001, base_kw=1_000_000)
    (row,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    assert row["delivered_pct"] == pytest.approx(100 * 2_000_000 / 0.001 * 28 / 30, rel=0.1)
    out = io.StringIO()
    output.write(iter([row]), list(row), out, "json")
    json.loads(out.getvalue(), parse_constant=_not_strict)
    assert status.check(world.engine, *CHECK).code == status.Health.OK


def test_status_warns_of_a_site_that_delivered_too_little(world: World) -> None:
    hand_computed(world, curtailed_kw=95)  # 5 of 20 kW: (2 x 0 + 28 x 5) / 30 = 4.67 kW, 23%
    check = status.check(world.engine, *CHECK, min_delivery=50)
    assert check.code == status.Health.WARNING
    ((dispatch_id, site_id, percent),) = check.under_delivered
    assert (dispatch_id, site_id) == ("p1", "a") and percent == pytest.approx(140 / 30 / 20 * 100)
    assert "WARNING: site a delivered 23% of its commitment to dispatch p1" in check.problems[0]
    assert status.check(world.engine, *CHECK, min_delivery=20).code == status.Health.OK
    # no longer within the window
    assert status.check(world.engine, CHECK[0], timedelta(hours=2)).under_delivered == []


def test_a_site_etl_did_not_curtail_is_not_said_to_under_deliver(world: World) -> None:
    """A dispatch etl never acted on (ended before the store's first fetch, a test, cancelled,
    missed) asked nothing of its sites: the console's banner warned of such a history dispatch.
    (One whose curtail failed is: tests/store/test_rehearsal.py.)"""
    hand_computed(world, curtailed_kw=100.5)  # the load rose: -2.5%, shown -2%, not 0
    check = status.check(world.engine, *CHECK, min_delivery=50)
    assert "WARNING: site a delivered -2% of its commitment to dispatch p1" in check.problems[0]
    with world.engine.begin() as conn:
        conn.execute(
            update(schema.actions)
            .where(schema.actions.c.kind == "curtail")
            .values(state="skipped", attempts=0, note="ended before this store's first fetch")
        )
    assert status.check(world.engine, *CHECK, min_delivery=50).under_delivered == []


def test_the_chart_has_a_panel_per_site_and_a_marker_per_command(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start, _ = hand_computed(world, curtailed_kw=75)
    path = tmp_path / "p1.svg"
    cli = InProcess(monkeypatch, capsys, world.engine.url.render_as_string(hide_password=False))
    assert cli.ok("audit", "--dispatch", "p1", "--chart", str(path)) == f"wrote {path}\n"
    svg = ElementTree.parse(path).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    (panel,) = svg.findall("svg:g[@class='panel']", ns)
    assert panel.get("data-site") == "a"
    (load,) = panel.findall("svg:polyline[@class='load']", ns)
    assert len(load.get("points", "").split()) == 108
    assert panel.find("svg:rect[@class='window']", ns) is not None
    baseline = panel.findtext("svg:line[@class='baseline']/svg:title", namespaces=ns)
    assert baseline == "baseline 100.0 kW"
    assert panel.findtext("svg:line[@class='target']/svg:title", namespaces=ns) == "target 80.0 kW"
    markers = [g.get("class") for g in panel.findall("svg:g", ns)]
    assert markers == ["command curtail succeeded", "command restore succeeded"]
    title = svg.findtext("svg:title", namespaces=ns)
    assert title is not None
    local = start.astimezone(ZoneInfo("US/Central"))  # the program's zone
    assert f"{local:%Y-%m-%d %H:%M}" in title and f"UTC{local:%z}" in title


def test_a_chart_of_ids_with_markup_in_them_is_still_one_well_formed_picture(
    world: World, tmp_path: Path
) -> None:
    hostile = 'a" onload="alert(1)'
    world.step(ended("<d&1>", site(hostile), start=150, end=120))
    telemetry.fetch_telemetry(world.engine, world.client)
    path = tmp_path / "chart.svg"
    path.write_text(chart.render(chart.chart_data(world.engine, "<d&1>")))
    svg = ElementTree.parse(path).getroot()
    (panel,) = svg.findall("{http://www.w3.org/2000/svg}g[@class='panel']")
    assert panel.get("data-site") == hostile and panel.get("onload") is None
    assert "<d&1>" in svg.findtext("{http://www.w3.org/2000/svg}title", "")


def test_a_chart_needs_a_dispatch_that_exists(cli: InProcess, tmp_path: Path) -> None:
    no_dispatch = cli("audit", "--chart", str(tmp_path / "x.svg"))
    assert no_dispatch.returncode == 2 and "give --dispatch ID" in no_dispatch.stderr
    unknown = cli("audit", "--dispatch", "nope", "--chart", str(tmp_path / "x.svg"))
    assert unknown.returncode == 2 and "no dispatch 'nope'" in unknown.stderr
    assert not (tmp_path / "x.svg").exists()


def test_readings_the_window_did_not_ask_for_are_set_aside_and_junk_is_capped(
    world: World,
) -> None:
    """Before, 200,000 readings from 3,000 days ago were stored, one row each."""
    world.step(ended("d1", site("a"), start=70, end=60))  # its window: 130 to 30 minutes ago
    start = datetime.fromisoformat(ago(130)).replace(second=0, microsecond=0, tzinfo=UTC)
    good = [reading(start + timedelta(minutes=m)) for m in range(2, 100)]
    long_ago = start - timedelta(days=3000)
    junk = [reading(long_ago + timedelta(minutes=m)) for m in range(500)]
    off_grid = {**reading(start + timedelta(minutes=5, seconds=30)), "value": 1.0}
    wide = {**reading(start + timedelta(minutes=6)), "interval_seconds": 300, "value": 2.0}
    world.sandbox.telemetry = {"a": good + junk + [off_grid, wide]}
    world.sandbox.faults.any_telemetry = True
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    assert summary.readings_new == len(good) and summary.rejected == telemetry.MOST_REJECTED + 1
    with world.engine.connect() as conn:
        stored = conn.execute(select(func.min(schema.telemetry.c.interval_end))).scalar_one()
        reasons = conn.execute(select(schema.rejected_records.c.reason)).scalars().all()
    assert stored > start
    assert sum("outside the window asked for" in r for r in reasons) == telemetry.MOST_REJECTED
    assert "telemetry: 402 more readings set aside" in reasons


def test_an_answer_larger_than_its_request_could_need_is_refused_unparsed(world: World) -> None:
    world.step(ended("d1", site("a"), start=70, end=60), ended("d2", site("b"), start=70, end=60))
    start = datetime.fromisoformat(ago(130)).replace(second=0, microsecond=0, tzinfo=UTC)
    long_ago = start - timedelta(days=3000)
    junk = [reading(long_ago + timedelta(minutes=m)) for m in range(30_000)]
    world.sandbox.telemetry = {"a": junk, "b": [reading(start + timedelta(minutes=5))]}
    world.sandbox.faults.any_telemetry = True
    summary = telemetry.fetch_telemetry(world.engine, world.client)
    assert summary.failed_windows == 1 and summary.readings_new == 1  # d2's window still fetched
    assert summary.error is not None and "more than they could need" in summary.error
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.rejected_records)).scalar() == 0


def with_meters(world: World, meters: dict[str, str], other_kw: dict[str, float]) -> None:
    """Site `a` of hand_computed with these meters listed by /sites (id: asset_type; its
    readings are m1's; none given: those fetched), and each other meter reading a constant kW
    over the whole window."""
    listed = [{"id": m, "name": f"meter {m}", "asset_type": kind} for m, kind in meters.items()]
    with world.engine.begin() as conn:
        if listed:
            update_meters = update(schema.sites).where(schema.sites.c.id == "a")
            conn.execute(update_meters.values(meters=listed))
        m1 = conn.execute(select(schema.telemetry).where(schema.telemetry.c.meter_id == "m1")).all()
        rows.write_many(
            conn,
            insert(schema.telemetry),
            [
                {**reading._asdict(), "meter_id": meter, "kw": kw}
                for meter, kw in other_kw.items()
                for reading in m1
            ],
        )
        measures.measure(conn, [("p1", "a")])  # as a fetch that stores readings does


def performance(world: World) -> dict[str, object]:
    (row,) = reports.stream(world.engine, reports.performance_report(reports.ReportFilter()))
    return row


HAND_COMPUTED = {  # hand_computed's figures, of m1 alone: 100 kW, then 75 from the 3rd minute
    "baseline_kw": 100,
    "mean_kw_during": (2 * 100 + 28 * 75) / 30,
    "delivered_kw": 100 - 2300 / 30,
    "responded_at_minute": 3,
}


def assert_load_of_m1_alone(row: dict[str, object], start: datetime) -> None:
    assert row["baseline_kw"] == pytest.approx(HAND_COMPUTED["baseline_kw"])
    assert row["mean_kw_during"] == pytest.approx(HAND_COMPUTED["mean_kw_during"])
    assert row["delivered_kw"] == pytest.approx(HAND_COMPUTED["delivered_kw"])
    assert row["responded_at"] == start + timedelta(minutes=3)


def test_a_site_with_a_poi_meter_is_measured_by_it_alone(world: World) -> None:
    """Sub-meters behind the point of interconnection are in its reading already: before, a site
    with a POI at 100 kW and a 60 kW sub-meter read 160 kW."""
    start, _ = hand_computed(world, curtailed_kw=75)
    with_meters(world, {"m1": "poi", "sub": "load", "gen": "generator"}, {"sub": 60, "gen": 7})
    row = performance(world)
    assert_load_of_m1_alone(row, start)
    assert row["generation_kw_during"] == pytest.approx(7) and row["storage_kw_during"] is None
    assert meter_roles(world) == [("gen", "generation"), ("m1", "load"), ("sub", "behind_poi")]
    drawn = chart.chart_data(world.engine, "p1")  # the chart draws the same load
    assert drawn.baseline(drawn.panels[0]) == pytest.approx(100)


def test_meter_types_are_taken_in_any_case(world: World) -> None:
    """/sites listing `POI`: before, it was no POI, and the site read 160 kW, POI and sub-meter
    added up."""
    start, _ = hand_computed(world, curtailed_kw=75)
    world.sandbox.sites = [
        {"id": "a", "name": "Site a", "customer_location_id": "loc-a", "meters": [
            {"id": "m1", "name": "POI", "asset_type": "POI"},
            {"id": "sub", "name": "Sub", "asset_type": "Load"},
        ]},
    ]  # fmt: skip
    dispatches.fetch(world.engine, world.client, include_sites=True)
    with_meters(world, {}, {"sub": 60})  # the sub-meter's readings alone: the meters as fetched
    assert_load_of_m1_alone(performance(world), start)
    assert meter_roles(world) == [("m1", "load"), ("sub", "behind_poi")]


def test_a_site_whose_meters_are_listed_after_its_measure_is_measured_again(
    world: World,
) -> None:
    """A site first named by a dispatch has no meters until GET /sites lists them: measured
    before, its generator counted as load. The sites fetch that lists them has the site's
    recent dispatches measured again at the next telemetry fetch."""
    start, _ = hand_computed(world, curtailed_kw=75)
    with_meters(world, {}, {"gen": 30})  # the generator's readings, its meter not yet known
    assert performance(world)["baseline_kw"] == pytest.approx(130)
    world.sandbox.sites = [
        {"id": "a", "name": "Site a", "customer_location_id": "loc-a", "meters": [
            {"id": "m1", "name": "Main", "asset_type": "load"},
            {"id": "gen", "name": "Genset", "asset_type": "generator"},
        ]},
    ]  # fmt: skip
    dispatches.fetch(world.engine, world.client, include_sites=True)
    assert telemetry.fetch_telemetry(world.engine, world.client).measured == 1
    row = performance(world)
    assert_load_of_m1_alone(row, start)
    assert row["generation_kw_during"] == pytest.approx(30)


def test_generation_and_storage_are_reported_apart_from_the_load(world: World) -> None:
    start, _ = hand_computed(world, curtailed_kw=75)
    with_meters(
        world, {"m1": "load", "gen": "generator", "bat": "battery"}, {"gen": 30, "bat": -12.5}
    )
    row = performance(world)
    assert_load_of_m1_alone(row, start)
    assert row["generation_kw_during"] == pytest.approx(30)
    assert row["storage_kw_during"] == pytest.approx(-12.5)


def test_load_meters_and_unlisted_ones_add_up_when_there_is_no_poi(world: World) -> None:
    hand_computed(world, curtailed_kw=75)
    with_meters(world, {"m1": "load", "m2": "load"}, {"m2": 20, "unlisted": 5})
    row = performance(world)
    assert row["baseline_kw"] == pytest.approx(100 + 20 + 5)
    assert row["mean_kw_during"] == pytest.approx((2 * 100 + 28 * 75) / 30 + 25)
    assert row["generation_kw_during"] is None


def test_a_site_whose_meters_were_never_listed_sums_them_all(world: World) -> None:
    hand_computed(world, curtailed_kw=75)
    with_meters(world, {}, {"m2": 10})
    assert performance(world)["baseline_kw"] == pytest.approx(110)


def meter_roles(world: World) -> list[tuple[Any, ...]]:
    with world.engine.connect() as conn:
        query = text("SELECT DISTINCT meter_id, role FROM meter_readings ORDER BY meter_id")
        return [tuple(row) for row in conn.execute(query)]
