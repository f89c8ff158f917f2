"""The pure parts, without a database: what a change of a dispatch means to the store (ingest's
diff functions) and to the sites it holds (the planner's transition)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.act.planner import HISTORY_NOTE, Pair, transition
from etl.base.config import ProcessorSettings
from etl.base.timeutil import format_rfc3339
from etl.base.vocabulary import ActionState, Holding
from etl.ingest.diff import (
    answers_by_id,
    dispatch_change,
    id_of,
    program_change,
    rejected_events,
    site_change,
    split_duplicates,
)
from etl.source.records import parse_dispatch
from etl.store.rows import Row
from tests.helpers import dispatch, site

NOW = datetime(2024, 2, 2, 15, 0, tzinfo=UTC)
SETTINGS = ProcessorSettings()
MINUTE = timedelta(minutes=1)


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
    releases: list[dict[str, object]] = [
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


# any two states of one dispatch, as the API may send them one after the other
TIMES = [NOW - timedelta(hours=1), NOW, NOW + timedelta(minutes=30)]
ENDS = [None, NOW + timedelta(hours=1), NOW + timedelta(hours=2)]


@st.composite
def states(draw: st.DrawFn) -> dict[str, Any]:
    commitments = {s: draw(st.sampled_from([None, 5.0, 10.0])) for s in "abc"}
    listed = draw(st.lists(st.sampled_from("abc"), unique=True))
    start, end = draw(st.sampled_from(TIMES)), draw(st.sampled_from(ENDS))
    fields: dict[str, Any] = {
        "authorized": draw(st.booleans()),
        "test": draw(st.booleans()),
        "start_time": format_rfc3339(start),
        "end_time": None if end is None else format_rfc3339(end),
        "modification_number": draw(st.one_of(st.none(), st.integers(0, 3))),
        "metadata": draw(st.sampled_from([None, {"k": 1}, {"k": 2}])),
        "future_field": draw(st.sampled_from([None, "x", "y"])),  # one etl does not model
    }
    program = {**dispatch("p")["program"], "id": draw(st.sampled_from([42, 43]))}
    return dispatch("d1", *(site(s, commitments[s]) for s in listed), program=program, **fields)


def applied(
    old: dict[str, Any] | None, old_sites: dict[str, Any], raw: dict[str, Any], at: datetime
) -> tuple[Any, dict[str, Any]]:
    """The change of a state over what is stored, and the sites stored after it."""
    change = dispatch_change(old, old_sites, parse_dispatch(raw), "h", at)
    assert change is not None
    return change, {**old_sites, **{r["site_id"]: r for r in change.site_rows}}


def listed_sites(raw: dict[str, Any]) -> dict[str, float | None]:
    return {s["id"]: s.get("commitment") for s in raw["sites"]}


@given(states(), states())
def test_each_difference_between_two_states_is_its_event_and_nothing_else(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    after["modification_number"] = None  # applied whatever the stored number
    first, sites = applied(None, {}, before, NOW)
    change, _ = applied(first.row, sites, after, NOW + timedelta(minutes=1))
    old, new = parse_dispatch(before), parse_dispatch(after)
    expected = set()
    if old.authorized and not new.authorized:
        expected.add("dispatch_cancelled")
    if new.end_time is not None and old.end_time != new.end_time:
        expected.add("dispatch_end_time_set" if old.end_time is None else "dispatch_end_time_moved")
    if (
        (not old.authorized and new.authorized)
        or (old.end_time is not None and new.end_time is None)
        or any(
            getattr(old, f) != getattr(new, f)
            for f in ("test", "start_time", "modification_number", "metadata")
        )
        or old.program.id != new.program.id
        or before.get("future_field") != after.get("future_field")
    ):
        expected.add("dispatch_changed")
    was, now = listed_sites(before), listed_sites(after)
    expected |= {"dispatch_site_added"} if now.keys() - was.keys() else set()
    expected |= {"dispatch_site_removed"} if was.keys() - now.keys() else set()
    if any(was[s] != now[s] for s in was.keys() & now.keys()):
        expected.add("dispatch_site_changed")
    kinds = [str(e.kind) for e in change.events]
    assert set(kinds) == expected
    site_events = [e for e in change.events if e.site_id is not None]
    assert len(site_events) == len(change.site_rows)  # one row written per site event
    assert sorted(e.site_id for e in site_events) == sorted(r["site_id"] for r in change.site_rows)


@given(states(), states())
def test_a_state_applied_again_changes_nothing(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    after["modification_number"] = None
    first, sites = applied(None, {}, before, NOW)
    second, sites = applied(first.row, sites, after, NOW + timedelta(minutes=1))
    again, _ = applied(second.row, sites, after, NOW + timedelta(minutes=2))
    assert again.events == [] and again.site_rows == []
    assert again.row["first_seen_at"] == NOW and again.row["updated_at"] == NOW + 2 * MINUTE


@given(states(), states(), st.integers(0, 3))
def test_a_state_older_than_the_stored_one_is_ignored_whatever_it_says(
    before: dict[str, Any], after: dict[str, Any], behind: int
) -> None:
    before["modification_number"] = 5
    after["modification_number"] = 4 - behind
    first, sites = applied(None, {}, before, NOW)
    assert dispatch_change(first.row, sites, parse_dispatch(after), "h2", NOW) is None


def test_a_site_dropped_and_listed_again_is_added_again_and_a_changed_one_keeps_its_added_at() -> (
    None
):
    first, sites = applied(None, {}, dispatch("d1", site("a", 5.0), site("b", 5.0)), NOW)
    later = NOW + timedelta(minutes=1)
    dropped, sites = applied(first.row, sites, dispatch("d1", site("b", 7.0)), later)
    assert {(r["site_id"], r["added_at"], r["removed_at"]) for r in dropped.site_rows} == {
        ("a", NOW, later),
        ("b", NOW, None),
    }
    back = NOW + timedelta(minutes=2)
    again, _ = applied(dropped.row, sites, dispatch("d1", site("a", 5.0), site("b", 7.0)), back)
    assert [(r["site_id"], r["added_at"], r["removed_at"]) for r in again.site_rows] == [
        ("a", back, None)
    ]
    assert [e.kind for e in again.events] == ["dispatch_site_added"]


def test_a_sites_meters_from_get_sites_outlast_a_dispatch_that_lists_it_without_them() -> None:
    meters = [{"id": "m1", "name": "Main", "asset_type": "poi"}]
    listed = {"name": "A", "customer_location_id": "1", "meters": meters}
    row, _ = site_change(None, "s1", listed, NOW)
    assert row is not None
    from_dispatch = {"name": "A", "customer_location_id": "1"}
    assert site_change(row, "s1", from_dispatch, NOW) == (None, [])
    moved, events = site_change(row, "s1", {"name": "A", "customer_location_id": "2"}, NOW)
    assert moved is not None and moved["meters"] == meters
    assert [e.kind for e in events] == ["site_changed"]
    assert events[0].details == {"changes": {"customer_location_id": {"old": "1", "new": "2"}}}


def test_each_record_set_aside_is_an_event_of_its_kind_naming_it() -> None:
    rows: list[Row] = [
        {"kind": "dispatch", "record_id": "d1", "reason": "dispatch: missing 'test'"},
        {"kind": "site", "record_id": "s1", "reason": "site: 'id' is empty"},
        {"kind": "telemetry", "record_id": "s2", "reason": "reading: units 'kWh'"},
        {"kind": "dispatch", "record_id": None, "reason": "dispatch is list"},
    ]
    events = rejected_events(rows)
    assert [(e.kind, e.dispatch_id, e.site_id) for e in events] == [
        ("dispatch_rejected", "d1", None),
        ("site_rejected", None, "s1"),
        ("telemetry_rejected", None, "s2"),
        ("dispatch_rejected", None, None),
    ]
    assert [e.details["reason"] for e in events] == [r["reason"] for r in rows]


listings = st.lists(
    st.one_of(
        st.builds(
            lambda i, n, a: {**dispatch(i), "modification_number": n, "authorized": a},
            st.sampled_from("abc"),
            st.one_of(st.none(), st.integers(0, 3)),
            st.booleans(),
        ),
        st.sampled_from(["junk", 7, {"no": "id"}]),
    ),
    max_size=8,
)


@given(listings)
def test_of_each_id_listed_one_copy_at_most_is_kept_and_every_other_is_accounted_for(
    items: list[Any],
) -> None:
    kept, rejected = split_duplicates(items)
    kept_ids = [id_of(item) for item in kept if id_of(item) is not None]
    assert len(kept_ids) == len(set(kept_ids))
    assert [item for item in kept if id_of(item) is None] == [i for i in items if id_of(i) is None]
    for item in items:
        if id_of(item) is not None:
            assert item in kept or any(r.payload == item for r in rejected)
    for rejected_copy in rejected:  # only a copy of an id listed with a different copy
        copies = [i for i in items if id_of(i) == rejected_copy.record_id]
        assert any(c != rejected_copy.payload for c in copies)


@given(listings.flatmap(lambda items: st.tuples(st.just(items), st.permutations(items))))
def test_which_copy_is_kept_does_not_depend_on_the_listings_order(
    orders: tuple[list[Any], list[Any]],
) -> None:
    def chosen(items: list[Any]) -> dict[str, Any]:
        return {key: i for i in split_duplicates(items)[0] if (key := id_of(i)) is not None}

    one, other = orders
    assert chosen(one) == chosen(other)
