"""Test dispatches that the customer creates (POST /2022-04-15/dispatches), as Voltus's
certification asks for a production one: the reference's rules checked before anything is sent.

The reference: "Start time ... Must be in the future, within the next 72 hours"; the end "after
start_time, within the next 72 hours"; the dispatch has `test` true and lists the account's
sites registered in the program (the test program when none is named). Voltus's own notebook
sends the current minute as the start, so a start up to a minute past is taken as "now".
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from etl.base.config import is_practice_api
from etl.base.errors import ConfigError
from etl.base.timeutil import format_rfc3339
from etl.source.api import VoltusClient

__all__ = ["WITHIN", "SentTestDispatch", "create"]

WITHIN = timedelta(hours=72)  # how far ahead a test dispatch may start and end
NOW_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class SentTestDispatch:
    start: datetime
    end: datetime
    program_id: int | None


def create(
    client: VoltusClient,
    start: datetime,
    duration: timedelta,
    now: datetime,
    program_id: int | None = None,
    confirmed: bool = False,
) -> SentTestDispatch:
    """Check the request, then send it once. Against an API other than the public sandbox or a
    loopback emulator, only when `confirmed`: a test dispatch there reaches the real sites'
    handlers of every integration that does not skip tests."""
    if duration <= timedelta(0):
        raise ConfigError(f"the duration must be positive, not {duration}")
    if start < now - NOW_SLACK:
        raise ConfigError(f"the start {format_rfc3339(start)} is in the past")
    # the end is computed last: the year 9999 plus a second is no date
    if start > now + WITHIN or duration > WITHIN or start + duration > now + WITHIN:
        raise ConfigError(
            f"a test dispatch from {format_rfc3339(start)} for {duration} would end more than "
            f"{WITHIN.total_seconds() / 3600:.0f} hours ahead (the API's limit)"
        )
    end = start + duration
    if program_id is not None and not 0 < program_id < 2**31:
        raise ConfigError(f"no program has the id {program_id}")
    if not confirmed and not is_practice_api(client.settings.url):
        raise ConfigError(
            "this creates a test dispatch in production, sent to every integration of the "
            "account: add --yes to go ahead"
        )
    client.create_test_dispatch(start, end, program_id)
    return SentTestDispatch(start, end, program_id)
