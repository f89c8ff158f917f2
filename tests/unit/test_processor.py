"""A single run's exit code from what it lived through: its first error's, else 5 when an
action attempt failed, else 0; how many actions a pass claims at once. (The runs:
tests/store/test_processor.py.)"""

from etl.act.processor import MOST_IN_HAND, PassSummary, _to_claim
from etl.base.errors import ApiError, ConfigError, DatabaseError, ExitCode
from etl.ingest.dispatches import FetchSummary
from etl.jobs.runner import exit_code


def test_the_first_error_decides_then_a_failed_attempt_then_ok() -> None:
    failed, clean = PassSummary(failed=1), PassSummary(succeeded=3)
    assert exit_code([]) == ExitCode.OK
    assert exit_code([clean, PassSummary(overtaken=2)]) == ExitCode.OK
    set_aside = FetchSummary(1, 5, 0, 0, 0, rejected=2)  # records set aside fail no run
    assert exit_code([set_aside, clean]) == ExitCode.OK
    assert exit_code([clean, failed]) == ExitCode.ACTIONS_FAILED
    assert exit_code([failed, ApiError("down"), DatabaseError("locked")]) == ExitCode.API
    assert exit_code([DatabaseError("locked"), ConfigError("bad")]) == ExitCode.DATABASE


def test_a_pass_claims_what_its_workers_finish_in_about_a_second() -> None:
    # nothing returned yet: a free worker's worth, as a slow handler is claimed
    assert _to_claim(workers=32, in_hand=0, returned_last_second=0) == 32
    assert _to_claim(workers=32, in_hand=31, returned_last_second=0) == 1
    assert _to_claim(workers=32, in_hand=32, returned_last_second=0) == 0
    # a fast handler: hundreds a claim, never over MOST_IN_HAND in hand...
    assert _to_claim(workers=32, in_hand=0, returned_last_second=5_000) == MOST_IN_HAND
    # ...and none while over half of that is still in hand (one claim, many calls)
    assert _to_claim(workers=32, in_hand=501, returned_last_second=5_000) == 0
    assert _to_claim(workers=32, in_hand=500, returned_last_second=5_000) == 500
    # a handler of a second: a worker's turn queued behind each running call
    assert _to_claim(workers=32, in_hand=32, returned_last_second=32) == 32
    assert _to_claim(workers=32, in_hand=33, returned_last_second=32) == 0
    for workers in (1, 8, 1000):
        for in_hand in range(0, 1001, 7):
            for pace in (0, 1, 50, 10_000):
                wanted = _to_claim(workers, in_hand, pace)
                # a free worker is always fed; nothing past the bound is ever taken
                assert wanted >= 0 and in_hand + wanted <= max(MOST_IN_HAND, workers)
                assert in_hand >= workers or wanted >= workers - in_hand
