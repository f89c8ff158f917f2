"""The dispatch calendar (RFC 5545), parsed back with the icalendar package: an event per
dispatch, its UID stable, its SEQUENCE raised when its dispatch moves or is cancelled."""

from datetime import timedelta
from typing import Any

from icalendar import Calendar
from sqlalchemy import Engine

from etl.base.timeutil import format_rfc3339, utcnow
from etl.ingest import dispatches
from etl.read import calendar
from etl.read.reports import ReportFilter
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from tests.helpers import dispatch, site
from tests.processes import InProcess


def events(engine: Engine) -> dict[str, Any]:
    parsed = Calendar.from_ical(calendar.ics(engine, ReportFilter(), utcnow()))
    return {str(e["uid"]).split("@")[0]: e for e in parsed.walk("VEVENT")}


def test_each_dispatch_is_an_event_that_moves_and_is_cancelled_under_its_uid(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    start = utcnow().replace(microsecond=0) + timedelta(hours=2)
    shown = dispatch(
        "d1", site("a", 12), site("b", None), start_time=format_rfc3339(start),
        end_time=format_rfc3339(start + timedelta(hours=1)),
    )  # fmt: skip
    sandbox.dispatches = [shown]
    dispatches.fetch(engine, client)
    (first,) = events(engine).values()
    assert str(first["uid"]) == f"d1@{sandbox.url.split('//')[1].split(':')[0]}"
    assert first.decoded("dtstart") == start and first["sequence"] == 0
    assert str(first["status"]) == "CONFIRMED"
    assert "- Site a (a): 12 kW" in str(first["description"])
    assert "- Site b (b): no commitment" in str(first["description"])

    moved_end = start + timedelta(hours=2)
    sandbox.dispatches = [{**shown, "end_time": format_rfc3339(moved_end)}]
    dispatches.fetch(engine, client)
    moved = events(engine)["d1"]
    assert moved["uid"] == first["uid"] and moved["sequence"] == 1
    assert moved.decoded("dtend") == moved_end

    sandbox.dispatches = [{**shown, "end_time": format_rfc3339(moved_end), "authorized": False}]
    dispatches.fetch(engine, client)
    cancelled = events(engine)["d1"]
    assert str(cancelled["status"]) == "CANCELLED" and cancelled["sequence"] == 2


def test_hostile_names_are_text_in_the_calendar(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    name = 'Evil;, \\ "site" END:VEVENT <b>'
    shown = dispatch("d1", site("a", 5, name=name))
    shown["program"] = {**shown["program"], "name": "P; DTSTART:19700101"}
    sandbox.dispatches = [shown]
    dispatches.fetch(engine, client)
    parsed = Calendar.from_ical(calendar.ics(engine, ReportFilter(), utcnow()))
    (event,) = parsed.walk("VEVENT")
    assert str(event["summary"]) == "Voltus dispatch: P; DTSTART:19700101, 1 site"
    assert f"- {name} (a): 5 kW" in str(event["description"])
    assert event.decoded("dtstart").year > 2000


def test_etl_report_dispatches_writes_the_calendar_and_only_dispatches_have_one(
    cli: InProcess,
) -> None:
    cli.ok("fetch")
    parsed = Calendar.from_ical(cli.ok("report", "dispatches", "--format", "ics"))
    assert len(parsed.walk("VEVENT")) == 4
    only_tests = Calendar.from_ical(cli.ok("report", "dispatches", "--test", "--format", "ics"))
    assert [str(e["summary"]).startswith("TEST ") for e in only_tests.walk("VEVENT")] == [True]
    refused = cli("report", "sites", "--format", "ics")
    assert refused.returncode == 2 and "use one of table, csv, json, jsonl" in refused.stderr


def test_a_dispatch_without_an_end_has_one_marked_and_the_calendar_says_when_to_ask_again(
    engine: Engine, sandbox: Sandbox, client: VoltusClient
) -> None:
    """With no DTEND an event is a point in time, which calendars drew as nothing or a day;
    and with no refresh hint, a subscribed calendar asked again once a day or less."""
    start = utcnow().replace(microsecond=0) + timedelta(hours=1)
    sandbox.dispatches = [
        dispatch("d1", site("a"), start_time=format_rfc3339(start), end_time=None)
    ]
    dispatches.fetch(engine, client)
    (event,) = events(engine).values()
    assert event.decoded("dtend") == start + calendar.UNKNOWN_END_SHOWN
    assert str(event["summary"]).endswith("1 site (end unknown)")
    assert "Ends unknown yet (shown as 60 minutes" in str(event["description"])
    parsed = Calendar.from_ical(calendar.ics(engine, ReportFilter(), utcnow()))
    assert parsed.decoded("refresh-interval") == calendar.REFRESH
    text = calendar.ics(engine, ReportFilter(), utcnow()).decode()
    assert "REFRESH-INTERVAL;VALUE=DURATION:PT15M\r\n" in text
    assert "X-PUBLISHED-TTL:PT15M\r\n" in text
