"""`etl status`'s verdict on the facts it gathered: a pure function, each rule on its own."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from etl.act.failing import Failing
from etl.handlers import ActionKind
from etl.read.status import Health, Status, judge
from etl.store.vocabulary import ActionState

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


def failing(**fields: object) -> Failing:
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


def verdict(**facts: object) -> tuple[Health, list[str]]:
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
    facts: dict[str, object], code: Health, start: str
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
