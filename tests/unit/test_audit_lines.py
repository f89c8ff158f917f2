"""An audit line as a person reads it: JSON's spelling, every time in the chosen zone, long values
cut between words."""

from datetime import UTC, datetime
from typing import Any

from etl.base.logs import shorten
from etl.base.timeutil import time_shift
from etl.base.vocabulary import EventKind
from etl.read.audit import MOST_VALUE_CHARS, describe
from etl.store.events import NewEvent, describe_subject

EVENT: dict[str, Any] = {  # as describe takes it: a row of the events table
    "occurred_at": datetime(2026, 12, 6, 14, 0, tzinfo=UTC),
    "kind": "dispatch_changed",
    "dispatch_id": "d1",
    "site_id": None,
    "program_id": 42,
    "timezone": "US/Central",
    "details": {
        "test": False,
        "authorized": True,
        "end_time": {"old": None, "new": "2026-12-06T15:00:00Z"},
        "note": "the controller answered " + "at length " * 20,
    },
}


def test_values_in_one_spelling_and_times_in_the_chosen_zone() -> None:
    program = time_shift("program")
    shifted = {**EVENT, "occurred_at": program(EVENT["occurred_at"], "US/Central")}
    line = describe(shifted, program)
    assert line.startswith("2026-12-06 08:00:00-06:00  dispatch_changed")
    assert "test=false  authorized=true" in line
    assert "end_time=null→2026-12-06 09:00:00-06:00" in line
    assert "T15:00" not in line and "False" not in line


def test_a_long_value_is_cut_between_words_and_utc_is_the_default() -> None:
    line = describe(EVENT)
    assert "end_time=null→2026-12-06 15:00:00Z" in line
    note, whole = line.split("note=")[1], EVENT["details"]["note"]
    assert note.endswith("…") and len(note) <= 60
    assert whole.startswith(note[:-1]) and whole[len(note) - 1] == " "  # cut between words


def test_nested_details_lists_and_what_only_looks_like_a_time_are_shown_as_they_are() -> None:
    event = {
        **EVENT,
        "site_id": "s1",
        "details": {
            "changes": {
                "start_time": {"old": "2026-12-06T14:00:00Z", "new": "2026-12-06T14:30:00Z"}
            },
            "sites": ["a", "b"],
            "when": "2026-13-45T99:00Z",  # the shape of a time, not one
            "note": None,
        },
    }
    line = describe(event)
    assert "dispatch d1 site s1 program 42" in line
    assert "changes={start_time: 2026-12-06 14:00:00Z→2026-12-06 14:30:00Z}" in line
    assert "sites=a,b" in line and "when=2026-13-45T99:00Z" in line and "note=null" in line


def test_a_detail_quoting_line_breaks_stays_on_the_audits_line() -> None:
    line = describe({**EVENT, "details": {"error": "relay down\nFAKE 2026 line"}})
    assert "\n" not in line and "error=relay down\\x0aFAKE 2026 line" in line


def test_an_event_as_logged_names_its_subject_and_its_details_in_one_order() -> None:
    made = NewEvent(EventKind.SITE_RENAMED, {"new": "B", "old": "A"}, site_id="s1", program_id=4)
    assert made.describe() == 'site_renamed: site s1 program 4 {"new": "B", "old": "A"}'
    assert describe_subject(None, None, None) == ""
    assert describe_subject("d1", None, 0) == "dispatch d1 program 0"


def test_a_list_is_shown_as_far_as_the_line_shows_it() -> None:
    """A dispatch's `sites` names thousands: the line shows its start, cut as any long value;
    lists of every length about the cut come out as whole lists would."""
    lists = [[f"site-{i}" for i in range(5_000)]]
    lists += [["x"] * k for k in range(27, 34)]  # 53 to 65 characters, odd lengths
    lists += [["xx"] + ["x"] * (k - 1) for k in range(27, 34)]  # and even
    for items in lists:
        line = describe({**EVENT, "details": {"sites": items}})
        assert line.endswith(f"sites={shorten(','.join(items), MOST_VALUE_CHARS)}"), items
