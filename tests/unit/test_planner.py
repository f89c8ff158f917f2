"""The planner's rule, without a store: a site follows its holders. A dispatch holds a site while
it is authorized, lists the site, and `start_time - lead <= now < end_time` (a test dispatch
holds it as a test unless ETL_INCLUDE_TEST); each change of holding is a transition, and each
new episode begins with its one curtail. The properties hold for any pair, settings and times;
tests/unit/test_diff.py has the examples, tests/store/test_holders.py the store's part."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TypedDict

from hypothesis import given
from hypothesis import strategies as st

from etl.act.planner import HISTORY_NOTE, TEST_NOTE, Pair, _why_released, holding_now, transition
from etl.base.config import ProcessorSettings
from etl.base.vocabulary import ActionState, Holding

NOW = datetime(2024, 2, 2, 15, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def minutes(n: float) -> datetime:
    return NOW + n * MINUTE


offsets = st.integers(min_value=-300, max_value=300)  # minutes from NOW


@st.composite
def pairs(draw: st.DrawFn) -> Pair:
    start = minutes(draw(offsets))
    length = draw(st.one_of(st.none(), st.integers(min_value=-30, max_value=300)))
    holding = draw(st.sampled_from([None, Holding.HELD, Holding.TEST]))
    return Pair(
        dispatch_id="d1",
        site_id="s1",
        authorized=draw(st.sampled_from([True, True, True, False])),  # mostly: they hold
        test=draw(st.booleans()),
        start_time=start,
        end_time=None if length is None else start + length * MINUTE,
        removed_at=draw(st.sampled_from([None, None, None, minutes(-1)])),
        holding=holding,
        # a pair recorded as held is in an episode (0004's migration made old ones episode 1)
        episode=draw(st.integers(min_value=0 if holding is None else 1, max_value=5)),
    )


settings_ = st.builds(
    ProcessorSettings,
    lead_time=st.sampled_from([0.0, 30.0, 600.0, 3600.0]),
    include_test=st.booleans(),
)
first_fetches = st.one_of(st.none(), offsets.map(minutes))


def in_window(pair: Pair, now: datetime, settings: ProcessorSettings) -> bool:
    start = pair.start_time - timedelta(seconds=settings.lead_time)
    return start <= now and (pair.end_time is None or now < pair.end_time)


@given(pairs(), offsets.map(minutes), settings_)
def test_a_site_is_held_exactly_while_an_authorized_dispatch_lists_it_in_its_window(
    pair: Pair, now: datetime, settings: ProcessorSettings
) -> None:
    held = holding_now(pair, now, settings)
    if not pair.authorized or pair.removed_at is not None or not in_window(pair, now, settings):
        assert held is None
    elif pair.test and not settings.include_test:
        assert held == Holding.TEST
    else:
        assert held == Holding.HELD


@given(pairs(), offsets.map(minutes), settings_)
def test_a_test_dispatch_acted_on_holds_as_any_other_and_more_lead_never_holds_less(
    pair: Pair, now: datetime, settings: ProcessorSettings
) -> None:
    held = holding_now(pair, now, settings)
    acting = replace(settings, include_test=True)
    assert holding_now(pair, now, acting) == (None if held is None else Holding.HELD)
    longer = replace(settings, lead_time=settings.lead_time + 900)
    if held is not None:
        assert holding_now(pair, now, longer) == held


@given(pairs(), offsets.map(minutes), settings_, first_fetches)
def test_a_transition_records_the_holding_now_and_never_lowers_the_episode(
    pair: Pair, now: datetime, settings: ProcessorSettings, first_fetch: datetime | None
) -> None:
    change = transition(pair, now, settings, first_fetch)
    if change is None:
        return
    assert change.holding == holding_now(pair, now, settings)
    assert change.episode in (pair.episode, pair.episode + 1)
    if change.curtail is not None:  # a curtail comes only with a new episode
        assert change.episode == pair.episode + 1
    else:  # and a new episode only with its curtail
        assert change.episode == pair.episode


@given(pairs(), offsets.map(minutes), settings_, first_fetches)
def test_planning_twice_at_once_plans_once(
    pair: Pair, now: datetime, settings: ProcessorSettings, first_fetch: datetime | None
) -> None:
    change = transition(pair, now, settings, first_fetch)
    if change is not None:
        recorded = replace(pair, holding=change.holding, episode=change.episode)
        assert transition(recorded, now, settings, first_fetch) is None


@given(pairs(), offsets.map(minutes), settings_, first_fetches)
def test_what_a_new_episode_begins_with(
    pair: Pair, now: datetime, settings: ProcessorSettings, first_fetch: datetime | None
) -> None:
    change = transition(pair, now, settings, first_fetch)
    if change is None or change.curtail is None:
        return
    state, note = change.curtail
    if change.holding == Holding.HELD:
        assert (state, note) == (ActionState.PENDING, None)
    elif change.holding == Holding.TEST or (pair.test and not settings.include_test):
        assert (state, note) == (ActionState.SKIPPED, TEST_NOTE)
    else:  # a window that opened and closed unseen: this site's first episode, over already
        assert pair.episode == 0 and pair.holding is None and change.holding is None
        assert pair.authorized and pair.removed_at is None
        assert pair.end_time is not None and pair.end_time <= now
        assert change.episode == 1
        if first_fetch is None or pair.end_time <= first_fetch:
            assert (state, note) == (ActionState.SKIPPED, HISTORY_NOTE)
        else:
            assert state == ActionState.MISSED


@given(pairs(), offsets.map(minutes), settings_, first_fetches)
def test_a_release_ends_the_episode_with_no_action_of_its_own(
    pair: Pair, now: datetime, settings: ProcessorSettings, first_fetch: datetime | None
) -> None:
    change = transition(pair, now, settings, first_fetch)
    if pair.holding is not None and holding_now(pair, now, settings) is None:
        assert change is not None
        assert (change.holding, change.episode, change.curtail) == (None, pair.episode, None)


class Edit(TypedDict, total=False):
    """A change to the dispatch between passes: some of the pair's fields, anew."""

    authorized: bool
    removed_at: datetime | None
    test: bool


EDITS: list[Edit] = [
    {"authorized": False},
    {"authorized": True},
    {"removed_at": minutes(0)},
    {"removed_at": None},
    {"test": True},
    {"test": False},
]


@given(
    pair=pairs(),
    settings=settings_,
    first_fetch=first_fetches,
    passes=st.lists(
        st.tuples(st.integers(min_value=0, max_value=90), st.sampled_from([None, *EDITS])),
        max_size=12,
    ),
)
def test_over_any_history_each_episode_has_one_curtail_and_follows_the_holding(
    pair: Pair,
    settings: ProcessorSettings,
    first_fetch: datetime | None,
    passes: list[tuple[int, Edit | None]],
) -> None:
    """Passes at growing times, the dispatch changed now and then between them: after each
    pass the record follows the holding, and the curtails planned are as many as the episodes."""
    pair, now = replace(pair, holding=None, episode=0), minutes(-400)
    curtails = 0
    for wait, edit in passes:
        now += wait * MINUTE
        pair = replace(pair, **edit) if edit else pair
        change = transition(pair, now, settings, first_fetch)
        if change is not None:
            curtails += change.curtail is not None
            pair = replace(pair, holding=change.holding, episode=change.episode)
        assert pair.holding == holding_now(pair, now, settings)
    assert curtails == pair.episode


def test_the_window_opens_at_the_lead_before_the_start_and_closes_at_the_end() -> None:
    pair = Pair("d1", "s1", True, False, minutes(10), minutes(70), None, None, 0)
    early = ProcessorSettings(lead_time=600)
    assert holding_now(pair, minutes(10) - MINUTE / 60, ProcessorSettings()) is None
    assert holding_now(pair, minutes(10), ProcessorSettings()) == Holding.HELD
    assert holding_now(pair, minutes(0) - MINUTE / 60, early) is None
    assert holding_now(pair, minutes(0), early) == Holding.HELD
    assert holding_now(pair, minutes(70) - MINUTE / 60, early) == Holding.HELD
    assert holding_now(pair, minutes(70), early) is None
    open_ended = replace(pair, end_time=None)
    assert holding_now(open_ended, minutes(60 * 24 * 365), early) == Holding.HELD


def released(**fields: object) -> str:
    row = {"authorized": True, "removed_at": None, "end_time": minutes(60), "test": False}
    return _why_released(SimpleNamespace(**{**row, **fields}), NOW)


def test_a_curtail_no_longer_wanted_says_why_the_first_reason_first() -> None:
    assert released(authorized=False, removed_at=NOW, test=True) == "the dispatch was cancelled"
    assert released(removed_at=NOW, end_time=NOW) == "the dispatch dropped the site"
    assert released(end_time=NOW, test=True) == "the dispatch window passed"
    assert released(end_time=None, test=True) == "the dispatch became a test"
    assert released(end_time=None) == "the dispatch's start moved later"
