"""`--tz` on reports and audit: times shown in UTC, this machine's zone, each program's zone or a
named one, each with its offset, right on both sides of a daylight-saving change."""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import literal, select, type_coerce

from etl.sandbox.emulator import Sandbox
from etl.store.db import make_engine
from etl.store.schema import UTCDateTime
from tests.conftest import postgres_schema
from tests.helpers import at, dispatch, log_messages, site
from tests.processes import InProcess

# Chicago moved its clocks from 02:00 CST (08:00Z) to 03:00 CDT on 2026-03-08
BEFORE_CHANGE, AFTER_CHANGE = "2026-03-08T07:30:00Z", "2026-03-08T08:30:00Z"
CENTRAL = {
    "id": 1,
    "name": "Central",
    "timezone": "US/Central",
    "market": "MISO",
    "program_type": "capacity",
}
PARIS = {**CENTRAL, "id": 2, "name": "Paris", "timezone": "Europe/Paris"}


def rows(etl: InProcess, *args: str) -> list[dict[str, Any]]:
    """The report's rows as JSON: each value text, a number, a boolean or null."""
    return json.loads(etl.ok(*args, "--format", "json"))


def dispatch_row(etl: InProcess, dispatch_id: str, *args: str) -> dict[str, Any]:
    found = rows(etl, "report", "dispatches", *args)
    (row,) = [r for r in found if r["dispatch_id"] == dispatch_id]
    return row


@pytest.fixture
def run(cli: InProcess, sandbox: Sandbox) -> InProcess:
    """A store with a past dispatch across Chicago's change and an active one in Paris."""
    sandbox.dispatches = [
        dispatch(
            "dst",
            site("a"),
            program=CENTRAL,
            start_time=BEFORE_CHANGE,
            end_time=AFTER_CHANGE,
        ),
        dispatch("paris", site("b"), program=PARIS, start_time=at(-1)),
    ]
    cli.ok("run")
    return cli


def shown_in(value: str, zone: ZoneInfo) -> datetime:
    """The instant of a shown time, after checking that it carries `zone`'s offset then."""
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == moment.astimezone(zone).utcoffset(), (value, zone)
    return moment


def test_program_zone_on_both_sides_of_a_daylight_saving_change(run: InProcess) -> None:
    row = dispatch_row(run, "dst", "--tz", "program")
    assert (row["start_time"], row["end_time"]) == (
        "2026-03-08T01:30:00-06:00",
        "2026-03-08T03:30:00-05:00",
    )
    named = dispatch_row(run, "dst", "--tz", "America/Chicago")
    assert (named["start_time"], named["end_time"]) == (row["start_time"], row["end_time"])
    utc = dispatch_row(run, "dst")
    assert (utc["start_time"], utc["end_time"]) == (BEFORE_CHANGE, AFTER_CHANGE)


def test_each_row_in_its_own_program_zone(run: InProcess) -> None:
    """Curtailment rows name only their program: its zone is looked up."""
    program, utc = (rows(run, "report", "curtailments", "--tz", tz) for tz in ("program", "utc"))
    curtail, restore = [row for row in program if row["dispatch_id"] == "paris"]
    in_utc, _ = [row for row in utc if row["dispatch_id"] == "paris"]
    assert (curtail["action"], restore["action"], restore["finished_at"]) == (
        "curtail",
        "restore",
        None,  # waiting for the end: nothing to shift
    )
    for column in ("dispatch_start_time", "planned_at", "finished_at"):
        assert shown_in(curtail[column], ZoneInfo("Europe/Paris")) == datetime.fromisoformat(
            in_utc[column]
        )
    assert in_utc["planned_at"].endswith("Z")


def test_audit_lines_show_the_offset_of_the_chosen_zone(run: InProcess) -> None:
    lines = run.ok("audit", "--tz", "program").splitlines()
    paris = [line for line in lines if "dispatch paris" in line]
    central = [line for line in lines if "dispatch dst" in line or "program 1 " in line]
    sites = [line for line in lines if line.split()[2] == "site_seen"]
    assert paris and central and sites
    assert all(line.split()[1].endswith(("+01:00", "+02:00")) for line in paris)
    assert all(line.split()[1].endswith(("-06:00", "-05:00")) for line in central)
    assert all(line.split()[1].endswith("Z") for line in sites)  # no program: UTC
    jsonl = run.ok("audit", "--jsonl", "--tz", "Asia/Kolkata")
    records = [json.loads(line) for line in jsonl.splitlines()]
    assert all(r["occurred_at"].endswith("+05:30") for r in records)


@pytest.fixture
def machine_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # +05:45, no daylight saving
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_local_is_this_machine_zone(run: InProcess, machine_zone: None) -> None:
    found = rows(run, "report", "dispatches", "--tz", "local")
    assert {row["start_time"][-6:] for row in found} == {"+05:45"}


@pytest.mark.parametrize("zone", ["Mars/Base", "America", "../../etc/passwd", "x" * 5000, ""])
def test_an_unknown_zone_is_one_line(run: InProcess, zone: str) -> None:
    for command in (["report", "dispatches"], ["audit"]):
        result = run(*command, "--tz", zone)
        assert result.returncode == 2 and result.stdout == ""
        (line,) = log_messages(result.stderr, "ERROR")
        assert "unknown time zone" in line and len(line) < 300


def test_a_postgresql_session_reads_times_in_utc_whatever_zone_it_was_given() -> None:
    """etl sets each session's zone to UTC, so that psycopg hands times over in Python's own
    UTC, which UTCDateTime keeps as they are; a server or role in another zone changes nothing."""
    moment = datetime(2026, 3, 8, 8, 30, tzinfo=UTC)
    with postgres_schema() as url:
        engine = make_engine(f"{url}%20-cTimeZone%3DAmerica%2FChicago")
        try:
            with engine.connect() as conn:
                zone = conn.exec_driver_sql("SHOW TIME ZONE").scalar()
                read = conn.execute(select(type_coerce(literal(moment), UTCDateTime()))).scalar()
        finally:
            engine.dispose()
    assert zone == "UTC"
    assert read == moment and read.tzinfo is UTC
