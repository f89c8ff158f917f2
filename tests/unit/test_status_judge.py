"""`etl status`'s verdict on the facts it gathered: a pure function, each rule on its own."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.act.failing import Failing
from etl.base.vocabulary import ActionState
from etl.handlers import ActionKind
from etl.read.status import OUTBOX_LATE, Health, Status, _age, judge, notices_max_age

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MAX_AGE, WINDOW = timedelta(minutes=5), timedelta(hours=24)

HEALTHY = Status(
    checked_at=NOW,
    version="0.1.0",
    schema_revision="0015",
    last_success_at=NOW - timedelta(minutes=1),
    last_success_age_seconds=60,
    last_failure_at=None,
    last_failure_error=None,
    actions_due_or_running=3,
    restores_waiting=2,
    failing=[],
    vanished_recently=[],
    held_without_end=[],
    under_delivered=[],
    telemetry_error=None,
    clock_offset_seconds=0.4,
)


def failing(**fields: Any) -> Failing:
    """A curtail failing since 2 minutes ago, due 3 minutes ago."""
    found = Failing(
        action_id=1,
        kind=ActionKind.CURTAIL,
        dispatch_id="d1",
        site_id="s1",
        state=ActionState.RETRYING,
        attempts=2,
        due_since=NOW - timedelta(minutes=3),
        failing_since=NOW - timedelta(minutes=2),
        error=None,
        live=True,
        late=False,
    )
    return replace(found, **fields)


def test_only_the_first_failures_are_named_and_the_rest_counted() -> None:
    found = [failing(action_id=n, site_id=f"s{n}", late=n == 11) for n in range(12)]
    code, problems = verdict(failing=found)
    assert code == Health.CRITICAL and len(problems) == 11
    assert problems[-1] == "CRITICAL: and 2 more actions failing or failed (etl status --json)"
    _, problems = verdict(failing=found[:11])
    assert problems[-1] == "WARNING: and 1 more action failing or failed (etl status --json)"


def verdict(**facts: Any) -> tuple[Health, list[str]]:
    judged = judge(replace(HEALTHY, **facts), MAX_AGE, WINDOW, 50.0)
    return judged.code, judged.problems


def test_healthy_facts_are_ok_with_no_problem() -> None:
    assert verdict() == (Health.OK, [])


@pytest.mark.parametrize(
    ("facts", "code", "start"),
    [
        ({"last_success_at": None}, Health.CRITICAL, "CRITICAL: no fetch has succeeded yet"),
        (
            {"last_success_at": NOW - timedelta(minutes=6)},
            Health.CRITICAL,
            "CRITICAL: the last successful fetch is 6m old (limit 5m)",
        ),
        (
            {"failing": [failing(late=True, error="relay down")]},
            Health.CRITICAL,
            "CRITICAL: the curtail of site s1 for dispatch d1 is not done 3m after it fell due, "
            "failing since 2026-12-06T11:58:00Z (2 attempts): relay down",
        ),
        (
            {"failing": [failing(late=False)]},
            Health.WARNING,
            "WARNING: the curtail of site s1 for dispatch d1 is not done",
        ),
        (
            {"failing": [failing(live=False, state=ActionState.MISSED, error="too late")]},
            Health.WARNING,
            "WARNING: the curtail of site s1 for dispatch d1 was missed (etl ack once seen to): "
            "too late",
        ),
        (
            {"failing": [failing(kind=ActionKind.RESTORE, state=ActionState.FAILED, late=True)]},
            Health.CRITICAL,
            "CRITICAL: the restore of site s1 for dispatch d1 gave up after 2 attempts",
        ),
        ({"vanished_recently": ["d1"]}, Health.WARNING, "WARNING: dispatch d1 vanished"),
        ({"held_without_end": ["d2"]}, Health.WARNING, "WARNING: dispatch d2 has held sites"),
        (
            {"under_delivered": [("d3", "s1", 20.0)]},
            Health.WARNING,
            "WARNING: site s1 delivered 20% of its commitment to dispatch d3",
        ),
        ({"telemetry_error": "HTTP 500"}, Health.WARNING, "WARNING: telemetry is not being"),
        ({"clock_offset_seconds": 11.0}, Health.WARNING, "WARNING: this machine's clock is 11 s"),
        ({"clock_offset_seconds": -11.0}, Health.WARNING, "WARNING: this machine's clock is 11 s"),
    ],
)
def test_each_rule_gives_its_problem_and_code(
    facts: dict[str, Any], code: Health, start: str
) -> None:
    assert verdict(**facts)[0] == code
    (problem,) = verdict(**facts)[1]
    assert problem.startswith(start), problem


def test_the_worst_problem_sets_the_code_and_every_problem_is_listed() -> None:
    found = [failing(late=True), failing(live=False, state=ActionState.FAILED)]
    code, problems = verdict(failing=found, clock_offset_seconds=-30.0)
    assert code == Health.CRITICAL
    assert [p.split(":")[0] for p in problems] == ["CRITICAL", "WARNING", "WARNING"]
    assert HEALTHY.problems == [] and HEALTHY.code == Health.OK  # the facts stay as they were


def test_the_limits_themselves_are_still_healthy() -> None:
    """A fetch exactly max_age old, a clock exactly 10 s off: not yet a problem."""
    assert verdict(last_success_at=NOW - MAX_AGE, clock_offset_seconds=10.0) == (Health.OK, [])


def test_sites_get_sites_stopped_listing_are_named_ten_at_most() -> None:
    gone: list[tuple[str, bool, list[str]]] = [(f"s{n:02d}", True, []) for n in range(12)]
    code, problems = verdict(unlisted_sites=[*gone, ("new", False, [])])
    assert code == Health.WARNING and len(problems) == 1
    assert problems[0].startswith(
        "WARNING: site s00, s01, s02, s03, s04, s05, s06, s07, s08, s09 and 2 more no longer "
        "listed by GET /sites"
    )
    assert "new" not in problems[0]  # never listed, and no dispatch names it: nothing to say


def test_a_dispatch_naming_a_site_get_sites_does_not_list_is_said_of_each_site() -> None:
    code, problems = verdict(unlisted_sites=[("a", False, ["d1", "d2"]), ("b", True, ["d1"])])
    assert code == Health.WARNING
    assert problems == [
        "WARNING: site b no longer listed by GET /sites: the API key's account gets no dispatch "
        "for a site it does not list; ask Voltus",
        "WARNING: dispatch d1, d2 names site a, which GET /sites does not list",
        "WARNING: dispatch d1 names site b, which GET /sites does not list",
    ]


def test_readings_waiting_are_a_warning_only_once_they_wait_too_long() -> None:
    assert verdict(outbox_waiting=40, outbox_oldest_queued_at=NOW - OUTBOX_LATE) == (Health.OK, [])
    code, (problem,) = verdict(
        outbox_waiting=40, outbox_oldest_queued_at=NOW - OUTBOX_LATE - timedelta(seconds=1)
    )
    assert code == Health.WARNING
    assert problem.startswith(
        "WARNING: 40 readings wait to be sent to Voltus, the oldest queued 10m"
    )


def test_readings_voltus_refused_whole_say_when_they_are_sent_again() -> None:
    later = NOW + timedelta(minutes=30)
    assert verdict(outbox_held_back=0, outbox_held_until=later) == (Health.OK, [])
    code, (problem,) = verdict(outbox_held_back=7, outbox_held_until=later)
    assert code == Health.WARNING
    assert problem.startswith("WARNING: Voltus refused 7 readings whole") and "in 30m" in problem


def test_each_site_under_dispatch_without_fresh_readings_is_a_line() -> None:
    late = [("a", "d1", NOW - timedelta(minutes=7)), ("b", "d1", NOW - timedelta(hours=3))]
    code, problems = verdict(late_readings=late)
    assert code == Health.WARNING
    assert [p.split(",")[0] for p in problems] == [
        "WARNING: site a is under dispatch d1",
        "WARNING: site b is under dispatch d1",
    ]
    assert "ended 7m ago" in problems[0] and "ended 3h ago" in problems[1]


def test_notifications_failing_and_given_up_are_warnings_with_their_error() -> None:
    code, problems = verdict(
        notifications_failing=2,
        notification_error="HTTP 500",
        notifications_given_up=1,
        given_up_error="gave up after 6h",
    )
    assert code == Health.WARNING
    assert problems[0].startswith("WARNING: 2 notifications have not reached their service")
    assert problems[0].endswith("they are tried again: HTTP 500")
    assert problems[1] == "WARNING: 1 notifications were given up in the last 24h: gave up after 6h"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (2 * 3600 - 1, "119m"),
        (2 * 3600, "2h"),
        (2 * 86400 - 1, "47h"),
        (2 * 86400, "2d"),
        (400 * 86400, "400d"),
    ],
)
def test_an_age_is_said_in_the_largest_unit_that_leaves_two_or_more(
    seconds: int, shown: str
) -> None:
    assert _age(timedelta(seconds=seconds)) == shown


@pytest.mark.parametrize(
    ("every", "most"),
    [(None, timedelta(minutes=5)), (60, timedelta(minutes=5)), (600, timedelta(minutes=30))],
)
def test_the_notifier_allows_three_turns_of_a_slow_loop_before_calling_a_fetch_old(
    every: float | None, most: timedelta
) -> None:
    assert notices_max_age(every) == most


FACTS = st.fixed_dictionaries(
    {},
    optional={
        "last_success_at": st.one_of(
            st.none(), st.integers(0, 3600).map(lambda s: NOW - timedelta(seconds=s))
        ),
        "failing": st.lists(
            st.builds(failing, late=st.booleans(), live=st.booleans(), attempts=st.integers(0, 9)),
            max_size=13,
        ),
        "vanished_recently": st.lists(st.sampled_from(["d1", "d2"]), max_size=2),
        "held_without_end": st.lists(st.sampled_from(["d3"]), max_size=1),
        "under_delivered": st.lists(st.just(("d3", "s1", 20.0)), max_size=2),
        "telemetry_error": st.one_of(st.none(), st.just("HTTP 500")),
        "clock_offset_seconds": st.one_of(st.none(), st.floats(-60, 60)),
        "unlisted_sites": st.lists(
            st.tuples(st.sampled_from(["a", "b"]), st.booleans(), st.lists(st.just("d1"))),
            max_size=3,
        ),
        "notifications_failing": st.integers(0, 3),
        "notifications_given_up": st.integers(0, 3),
    },
)


@given(FACTS)
def test_the_code_is_the_worst_problems_and_judging_again_says_the_same(
    facts: dict[str, Any],
) -> None:
    status = replace(HEALTHY, **facts)
    judged = judge(status, MAX_AGE, WINDOW, 50.0)
    levels = {problem.split(":")[0] for problem in judged.problems}
    assert levels <= {"CRITICAL", "WARNING"}
    assert judged.code == (
        Health.CRITICAL if "CRITICAL" in levels else Health.WARNING if levels else Health.OK
    )
    assert all("\n" not in problem for problem in judged.problems)
    again = judge(judged, MAX_AGE, WINDOW, 50.0)
    assert (again.code, again.problems) == (judged.code, judged.problems)
    assert status.problems == [] and status.code == Health.OK  # the facts stay as they were


def test_a_failing_line_says_since_when_in_the_zone_asked_with_its_offset() -> None:
    """`etl status` in UTC; a console page in its own zone, its lines the same otherwise."""
    facts = replace(HEALTHY, failing=[failing()])
    (utc,) = judge(facts, MAX_AGE, WINDOW, 50.0).problems
    (central,) = judge(facts, MAX_AGE, WINDOW, 50.0, "America/Chicago").problems
    assert "failing since 2026-12-06T11:58:00Z (2 attempts)" in utc
    assert "failing since 2026-12-06T05:58:00-06:00 (2 attempts)" in central
    assert utc.replace("2026-12-06T11:58:00Z", "2026-12-06T05:58:00-06:00") == central
