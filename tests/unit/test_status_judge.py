"""`etl status`'s verdict on the facts it gathered: a pure function, each rule on its own."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from etl.read.status import Health, Status, judge

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
    failed_recently=0,
    missed_recently=0,
    vanished_recently=[],
    held_without_end=[],
    under_delivered=[],
    telemetry_error=None,
    clock_offset_seconds=0.4,
)


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
        ({"failed_recently": 2}, Health.CRITICAL, "CRITICAL: 2 actions ended failed"),
        ({"missed_recently": 1}, Health.WARNING, "WARNING: 1 actions were missed"),
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
    code, problems = verdict(missed_recently=1, failed_recently=1, clock_offset_seconds=-30.0)
    assert code == Health.CRITICAL
    assert [p.split(":")[0] for p in problems] == ["CRITICAL", "WARNING", "WARNING"]
    assert HEALTHY.problems == [] and HEALTHY.code == Health.OK  # the facts stay as they were


def test_the_limits_themselves_are_still_healthy() -> None:
    """A fetch exactly max_age old, a clock exactly 10 s off: not yet a problem."""
    assert verdict(last_success_at=NOW - MAX_AGE, clock_offset_seconds=10.0) == (Health.OK, [])
