"""Queueing a reading reads no more than its own site's stored readings near it: the outbox's
lookup of what is already queued spans each site's own readings' times (the query runs against
both databases in tests/store/test_outbox.py)."""

from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects import sqlite

from etl.store.outbox import _spans

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def key(site_id: str, end: datetime) -> tuple[str, str, str, datetime, int, str]:
    return ("telemetry", site_id, "", end, 30, "kW")


def test_each_site_is_looked_up_over_its_own_readings_span() -> None:
    month_ago = NOW - timedelta(days=30)
    keys = [key("one", month_ago), key("two", NOW), key("one", month_ago + timedelta(seconds=30))]
    compiled = _spans(keys).compile(dialect=sqlite.dialect())
    values = list(compiled.params.values())
    # site one from a month ago over a minute; site two at now alone: not a month of both
    assert values == [
        "one",
        month_ago,
        month_ago + timedelta(seconds=30),
        "two",
        NOW,
        NOW,
    ]
