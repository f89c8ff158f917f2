"""A single run's exit code from what it lived through: its first error's, else 5 when an
action attempt failed, else 0. (The runs: tests/store/test_processor.py.)"""

from etl.act.processor import PassSummary
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
