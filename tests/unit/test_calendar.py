"""A dispatch as a calendar event (RFC 5545), from its report row: the same UID across feeds, a
SEQUENCE that moves it when it changes, CANCELLED when it is, and an end shown even when not
known yet. (The feed from a store: tests/store/test_calendar.py.)"""

from datetime import UTC, datetime, timedelta
from typing import Any

from icalendar import Event

from etl.read.calendar import UNKNOWN_END_SHOWN, _event

START = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
NOW = START - timedelta(hours=2)
ROW = {
    "dispatch_id": "d1",
    "start_time": START,
    "end_time": START + timedelta(hours=2),
    "timezone": "US/Central",
    "test": False,
    "authorized": True,
    "updated_at": NOW,
    "sites": 2,
    "program_name": "MISO - Operating Reserves",
    "market": "MISO",
    "committed_kw": 52.0,
}


def event(revisions: dict[str, int] | None = None, **changed: Any) -> Any:
    named = {"d1": ["Bakery (12 kW)", "Depot (40 kW)"]}
    return _event(Event(), {**ROW, **changed}, revisions or {}, named, "api.voltus.co", NOW)


def test_a_dispatch_is_an_event_of_its_window_named_for_people() -> None:
    made = event({"d1": 3})
    assert str(made["uid"]) == "d1@api.voltus.co" and made["sequence"] == 2
    assert made.decoded("dtstart") == START and made.decoded("dtend") == START + timedelta(hours=2)
    assert str(made["status"]) == "CONFIRMED"
    assert str(made["summary"]) == "Voltus dispatch: MISO - Operating Reserves, 2 sites"
    assert str(made["description"]).splitlines() == [
        "Dispatch d1 of MISO - Operating Reserves (MISO)",
        "Starts 2026-12-06 14:00 CST (2026-12-06T20:00:00Z)",
        "Ends 2026-12-06 16:00 CST",
        "Committed: 52 kW",
        "Bakery (12 kW)",
        "Depot (40 kW)",
    ]


def test_an_end_not_known_yet_is_shown_an_hour_long_and_says_so() -> None:
    made = event(end_time=None, sites=1, test=True, market=None, committed_kw=None)
    assert made.decoded("dtend") == START + UNKNOWN_END_SHOWN
    assert str(made["summary"]) == (
        "TEST Voltus dispatch: MISO - Operating Reserves, 1 site (end unknown)"
    )
    lines = str(made["description"]).splitlines()
    assert lines[0].endswith("(no market)") and lines[3] == "Committed: 0 kW"
    assert lines[2] == "Ends unknown yet (shown as 60 minutes; it moves once Voltus sets it)"


def test_a_cancelled_dispatch_is_a_cancelled_event_and_a_new_one_is_at_sequence_0() -> None:
    assert str(event(authorized=False)["status"]) == "CANCELLED"
    assert event()["sequence"] == 0 and event({"d1": 1})["sequence"] == 0
