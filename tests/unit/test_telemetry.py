"""Telemetry fetched around a dispatch, decided without the API or the store: the requests that
cover a window (10 sites and 10,000 points at most each), when a window still lacking readings
is asked again, and which readings answer a request. (The fetch itself:
tests/store/test_telemetry.py.)"""

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from etl.ingest.telemetry import (
    MAX_POINTS,
    MAX_SITES,
    REASK_FIRST,
    REASK_MAX,
    Window,
    _aligned,
    _not_asked_for,
    reask_at,
    requests_for,
)
from etl.source.records import Reading
from etl.store.schema import TELEMETRY_INTERVAL

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@given(
    sites=st.integers(min_value=1, max_value=35),
    minutes=st.integers(min_value=1, max_value=60 * 24 * 30),
    cut=st.integers(min_value=0, max_value=60 * 24 * 31),
)
def test_the_requests_of_a_window_cover_it_once_within_the_apis_limits(
    sites: int, minutes: int, cut: int
) -> None:
    window = Window(
        "d1", START, START + timedelta(minutes=minutes), tuple(f"s{n}" for n in range(sites))
    )
    until = START + timedelta(minutes=cut)
    asked = list(requests_for(window, until))
    last = min(window.end, until)
    groups: dict[tuple[str, ...], list[tuple[datetime, datetime]]] = {}
    for site_ids, start, end in asked:
        assert 1 <= len(site_ids) <= MAX_SITES
        assert start < end and (end - start) / timedelta(seconds=TELEMETRY_INTERVAL) <= MAX_POINTS
        groups.setdefault(tuple(site_ids), []).append((start, end))
    covered = sorted(s for group in groups for s in group)
    assert covered == (sorted(window.site_ids) if last > START else [])  # each site once
    for spans in groups.values():  # contiguous, from the window's start to its last interval
        assert spans[0][0] == START and spans[-1][1] == last
        assert all(one[1] == other[0] for one, other in pairwise(spans))


def test_a_window_counts_the_intervals_that_end_in_it() -> None:
    assert Window("d", START, START + timedelta(hours=1), ("a",)).intervals == 60
    assert Window("d", START, START + timedelta(seconds=30), ("a",)).intervals == 0
    odd = Window("d", START + timedelta(seconds=30), START + timedelta(minutes=2), ("a",))
    assert odd.intervals == 2  # those ending at 12:01 and 12:02


@given(asks=st.integers(min_value=1, max_value=10_000))
def test_a_window_still_lacking_readings_is_asked_again_later_each_time_up_to_twelve_hours(
    asks: int,
) -> None:
    wait = reask_at(START, asks) - START
    assert REASK_FIRST <= wait <= REASK_MAX
    assert wait <= reask_at(START, asks + 1) - START
    assert wait == min(REASK_FIRST * 2 ** min(asks - 1, 8), REASK_MAX)  # 1h, 2h, 4h, 8h, 12h


@given(seconds=st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_a_moment_aligned_is_on_the_half_minute_grid_and_within_a_step(seconds: float) -> None:
    moment = datetime.fromtimestamp(seconds, UTC)
    down, up = _aligned(moment, up=False), _aligned(moment, up=True)
    assert down.timestamp() % 30 == 0 and up.timestamp() % 30 == 0
    assert down <= moment <= up and up - down <= timedelta(seconds=30)


def reading(
    site: str = "a", end: datetime = START + timedelta(minutes=5), width: int = 60
) -> Reading:
    return Reading(site, "m1", end, width, 5.0)


def test_a_reading_answers_its_request_only_for_a_site_width_and_time_asked_for() -> None:
    window = (["a", "b"], START, START + timedelta(minutes=10))
    assert _not_asked_for(reading(), *window) is None
    assert _not_asked_for(reading(end=window[2]), *window) is None  # (start, end]
    reasons = {
        "other site": _not_asked_for(reading(site="c"), *window),
        "width": _not_asked_for(reading(width=300), *window),
        "at start": _not_asked_for(reading(end=START), *window),
        "after": _not_asked_for(reading(end=window[2] + timedelta(minutes=1)), *window),
        "off grid": _not_asked_for(reading(end=START + timedelta(seconds=90)), *window),
    }
    assert reasons["other site"] == "telemetry: site 'c' was not asked for"
    assert reasons["width"] == "telemetry: a 300 s interval, not the 60 s asked for"
    assert "outside the window asked for" in str(reasons["at start"])
    assert "outside the window asked for" in str(reasons["after"])
    assert str(reasons["off grid"]).endswith("off the 60 s grid")
