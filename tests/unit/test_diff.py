"""The pure parts, without a database: what a change of a dispatch means to the store (ingest's
diff functions) and to the sites it holds (the planner's transition)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etl.act.planner import HISTORY_NOTE, Pair, transition
from etl.base.config import ProcessorSettings
from etl.ingest.diff import (
    answers_by_id,
    dispatch_change,
    program_change,
    site_change,
    split_duplicates,
)
from etl.source.records import parse_dispatch
from etl.store.vocabulary import ActionState, Holding
from tests.helpers import dispatch, site

NOW = datetime(2024, 2, 2, 15, 0, tzinfo=UTC)
SETTINGS = ProcessorSettings()


def stored(record_fields: dict[str, Any]) -> dict[str, Any]:
    """A stored dispatch row as ingest reads it back."""
    change = dispatch_change(None, {}, parse_dispatch(dispatch("d1", **record_fields)), "h", NOW)
    assert change is not None
    return change.row


def test_a_new_dispatch_is_one_created_event_with_its_sites() -> None:
    change = dispatch_change(None, {}, parse_dispatch(dispatch("d1", site("a"))), "h", NOW)
    assert change is not None
    assert [e.kind for e in change.events] == ["dispatch_created"]
    assert change.events[0].details["sites"] == ["a"]
    assert change.row["content_hash"] == "h" and change.row["first_seen_at"] == NOW
    assert [r["site_id"] for r in change.site_rows] == ["a"]


def test_a_cancellation_and_an_end_time_are_their_own_events() -> None:
    old = stored({"modification_number": 1, "end_time": None})
    new = parse_dispatch(dispatch("d1", authorized=False, modification_number=2))
    change = dispatch_change(old, {}, new, "h2", NOW + timedelta(minutes=1))
    assert change is not None
    assert [e.kind for e in change.events][:3] == [
        "dispatch_cancelled",
        "dispatch_end_time_set",
        "dispatch_changed",
    ]
    assert change.row["first_seen_at"] == NOW


def test_an_older_modification_number_is_ignored_and_an_equal_one_applied() -> None:
    old = stored({"modification_number": 5})
    older = parse_dispatch(dispatch("d1", authorized=False, modification_number=4))
    assert dispatch_change(old, {}, older, "h2", NOW) is None
    for applied in (
        parse_dispatch(dispatch("d1", authorized=False, modification_number=5)),  # the same
        parse_dispatch(dispatch("d1", authorized=False)),  # unnumbered
    ):
        change = dispatch_change(old, {}, applied, "h2", NOW)
        assert change is not None
        assert "dispatch_cancelled" in [e.kind for e in change.events]
        assert change.row["authorized"] is False and change.row["content_hash"] == "h2"


def test_a_site_dropped_keeps_its_row_with_removed_at() -> None:
    old = stored({})
    old_sites = {
        "s1": {
            "dispatch_id": "d1",
            "site_id": "s1",
            "commitment_kw": 10.0,
            "added_at": NOW,
            "removed_at": None,
        }
    }
    change = dispatch_change(old, old_sites, parse_dispatch(dispatch("d1", site("s2"))), "h", NOW)
    assert change is not None
    assert {(r["site_id"], r["removed_at"]) for r in change.site_rows} == {
        ("s1", NOW),
        ("s2", None),
    }
    assert sorted(e.kind for e in change.events) == [
        "dispatch_site_added",
        "dispatch_site_removed",
    ]


def test_programs_and_sites_unchanged_write_nothing() -> None:
    program = parse_dispatch(dispatch("d1")).program
    row, events = program_change(None, program, NOW)
    assert row is not None and [e.kind for e in events] == ["program_seen"]
    assert program_change(row, program, NOW) == (None, [])
    renamed = replace(program, name="renamed")
    assert [e.kind for e in program_change(row, renamed, NOW)[1]] == ["program_changed"]
    site_row, _ = site_change(None, "s1", {"name": "A", "customer_location_id": "1"}, NOW)
    assert site_row is not None and site_row["meters"] is None
    again = site_change(site_row, "s1", {"name": "A", "customer_location_id": "1"}, NOW)
    assert again == (None, [])
    _, events = site_change(site_row, "s1", {"name": "B", "customer_location_id": "1"}, NOW)
    assert [e.kind for e in events] == ["site_renamed"]


def test_duplicates_identical_are_one_and_different_are_all_set_aside() -> None:
    a, b = dispatch("a"), dispatch("b")
    unique, rejected = split_duplicates([a, a, b, {**b, "authorized": False}, "junk"])
    assert unique == [a, "junk"]
    assert [(r.record_id, r.payload["authorized"]) for r in rejected] == [("b", True), ("b", False)]


def test_of_differing_copies_the_highest_modification_number_is_taken() -> None:
    old, new = dispatch("a", modification_number=3), dispatch("a", modification_number=7)
    cancelled = {**new, "authorized": False, "modification_number": 12}
    unique, rejected = split_duplicates([old, dispatch("b"), new, cancelled, old])
    assert unique == [cancelled, dispatch("b")]
    assert [r.payload["modification_number"] for r in rejected] == [3, 7]
    assert rejected[0].reason == (
        "dispatch: an older copy of this id in one listing (modification_number 3; the newest "
        "is 12)"
    )


@pytest.mark.parametrize(
    "numbers",
    [(4, 4), (4, None), (None, None), (4, -1), (4, "9"), (4, True), (4, 4.5)],
)
def test_differing_copies_without_one_highest_number_are_all_set_aside(
    numbers: tuple[Any, Any],
) -> None:
    copies = [{**dispatch("a"), "modification_number": n} for n in numbers]
    copies[1]["authorized"] = False  # they differ, whatever their numbers
    unique, rejected = split_duplicates(copies)
    assert unique == []
    assert [r.reason for r in rejected] == [
        "dispatch: 2 different copies of this id in one listing"
    ] * 2


def pair(**fields: Any) -> Pair:
    base = Pair(
        dispatch_id="d1",
        site_id="s1",
        authorized=True,
        test=False,
        start_time=NOW - timedelta(minutes=10),
        end_time=NOW + timedelta(minutes=50),
        removed_at=None,
        holding=None,
        episode=0,
    )
    return replace(base, **fields)


def test_starting_to_hold_is_a_new_episode_with_a_curtail() -> None:
    assert transition(pair(), NOW, SETTINGS, NOW) is not None
    change = transition(pair(episode=3), NOW, SETTINGS, NOW)
    assert change is not None
    assert (change.holding, change.episode, change.curtail) == (
        Holding.HELD,
        4,
        (ActionState.PENDING, None),
    )
    assert transition(pair(holding=Holding.HELD, episode=1), NOW, SETTINGS, NOW) is None


def test_every_release_ends_the_episode() -> None:
    held = {"holding": Holding.HELD, "episode": 1}
    releases = [
        {"authorized": False},
        {"removed_at": NOW},
        {"end_time": NOW},
        {"start_time": NOW + timedelta(minutes=1)},
    ]
    for release in releases:
        change = transition(pair(**held, **release), NOW, SETTINGS, NOW)
        assert change is not None and change.holding is None and change.episode == 1, release
        assert change.curtail is None
    test = transition(pair(**held, test=True), NOW, SETTINGS, NOW)
    assert test is not None and test.holding == Holding.TEST and test.episode == 2


def test_a_window_never_seen_open_is_missed_or_history() -> None:
    ended = {"start_time": NOW - timedelta(hours=2), "end_time": NOW - timedelta(hours=1)}
    missed = transition(pair(**ended), NOW, SETTINGS, NOW - timedelta(days=1))
    assert missed is not None and missed.curtail is not None
    assert missed.curtail[0] == ActionState.MISSED
    history = transition(pair(**ended), NOW, SETTINGS, NOW)
    assert history is not None and history.curtail == (ActionState.SKIPPED, HISTORY_NOTE)
    empty = {"start_time": NOW - timedelta(hours=1), "end_time": NOW - timedelta(hours=1)}
    assert transition(pair(**empty), NOW, SETTINGS, NOW - timedelta(days=1)) is None
    assert transition(pair(**ended, authorized=False), NOW, SETTINGS, None) is None


def test_lead_time_starts_holding_early() -> None:
    soon = pair(start_time=NOW + timedelta(seconds=30))
    assert transition(soon, NOW, SETTINGS, NOW) is None
    assert transition(soon, NOW, ProcessorSettings(lead_time=60), NOW) is not None


def test_an_answer_by_id_that_is_another_dispatch_is_set_aside() -> None:
    found, mismatched = answers_by_id(
        {"a": dispatch("a"), "b": dispatch("c"), "d": None, "e": ["not", "an", "object"]}
    )
    assert [item["id"] for item in found] == ["a"]
    assert [(r.record_id, r.reason) for r in mismatched] == [
        ("b", "dispatch: asked for 'b' by id, got another"),
        ("e", "dispatch: asked for 'e' by id, got another"),
    ]
