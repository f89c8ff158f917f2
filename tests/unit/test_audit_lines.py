"""An audit line as a person reads it: JSON's spelling, every time in the chosen zone, long values
cut between words."""

from datetime import UTC, datetime

from etl.base.timeutil import time_shift
from etl.read.audit import describe

EVENT = {
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
