"""A test dispatch is checked against the reference's rules before anything is sent: in the
future (the current minute counts as now), ending within 72 hours, a program id the API could
hold, and a production API only with --yes. (Sending it: the store tier's test of the same
name.)"""

from datetime import UTC, datetime, timedelta

import pytest

from etl.base.config import ApiSettings
from etl.base.errors import ConfigError
from etl.base.timeutil import utcnow
from etl.source import create_test_dispatch
from etl.source.api import VoltusClient
from etl.source.create_test_dispatch import WITHIN, create

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HALF_HOUR = timedelta(minutes=30)


class Client:
    """Stands for the API client: it records what would be sent."""

    def __init__(self, url: str = "https://sandbox.voltus.co") -> None:
        self.settings = ApiSettings(url, "k")
        self.sent: list[tuple[datetime, datetime, int | None]] = []

    def create_test_dispatch(self, start: datetime, end: datetime, program: int | None) -> None:
        self.sent.append((start, end, program))


def test_a_real_api_needs_yes_and_nothing_is_sent_without_it() -> None:
    client = VoltusClient(ApiSettings("https://api.voltus.co", "key-not-used"))
    with pytest.raises(ConfigError, match="add --yes"):
        create_test_dispatch.create(client, utcnow(), timedelta(minutes=30), utcnow())


@pytest.mark.parametrize(
    ("start", "duration", "program", "message"),
    [
        (NOW - timedelta(minutes=2), HALF_HOUR, None, "is in the past"),
        (NOW, timedelta(0), None, "must be positive"),
        (NOW, -HALF_HOUR, None, "must be positive"),
        (NOW + WITHIN - HALF_HOUR, timedelta(hours=1), None, "more than 72 hours ahead"),
        (NOW + WITHIN + timedelta(seconds=1), timedelta(seconds=1), None, "72 hours ahead"),
        (NOW, WITHIN + timedelta(seconds=1), None, "72 hours ahead"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), timedelta(days=1), None, "72 hours"),
        (NOW, HALF_HOUR, 0, "no program has the id 0"),
        (NOW, HALF_HOUR, 2**31, "no program has the id"),
    ],
)
def test_what_the_api_would_refuse_is_refused_and_nothing_sent(
    start: datetime, duration: timedelta, program: int | None, message: str
) -> None:
    client = Client()
    with pytest.raises(ConfigError, match=message):
        create(client, start, duration, NOW, program, confirmed=True)  # type: ignore[arg-type]
    assert client.sent == []


@pytest.mark.parametrize(
    ("start", "duration"),
    [
        (NOW - timedelta(seconds=59), HALF_HOUR),  # the current minute, as Voltus's notebook
        (NOW, WITHIN),  # ending at the limit itself
        (NOW + WITHIN - timedelta(minutes=1), timedelta(minutes=1)),
    ],
)
def test_a_dispatch_within_the_rules_is_sent_once_as_asked(
    start: datetime, duration: timedelta
) -> None:
    client = Client()
    sent = create(client, start, duration, NOW, 42)  # type: ignore[arg-type]
    assert client.sent == [(start, start + duration, 42)]
    assert (sent.start, sent.end, sent.program_id) == (start, start + duration, 42)


@pytest.mark.parametrize(
    ("url", "confirmed", "sent"),
    [
        ("https://sandbox.voltus.co", False, True),
        ("http://127.0.0.1:8787", False, True),
        ("https://api.voltus.co", False, False),
        ("https://api.voltus.co", True, True),
    ],
)
def test_only_production_needs_confirming(url: str, confirmed: bool, sent: bool) -> None:
    client = Client(url)
    if sent:
        create(client, NOW, HALF_HOUR, NOW, confirmed=confirmed)  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError, match="in production"):
            create(client, NOW, HALF_HOUR, NOW, confirmed=confirmed)  # type: ignore[arg-type]
    assert len(client.sent) == int(sent)
