"""`etl dispatches test`: a test dispatch created through the API, under the reference's rules,
sent once, and only with --yes against a real API."""

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select

from etl.base.config import ApiSettings
from etl.base.errors import ApiError
from etl.base.timeutil import utcnow
from etl.sandbox.emulator import Sandbox
from etl.source import create_test_dispatch
from etl.source.api import VoltusClient
from etl.store import schema
from tests.processes import InProcess

POSTED = "POST /2022-04-15/dispatches"


def test_a_test_dispatch_is_created_listed_and_fetched_as_a_test(
    cli: InProcess, sandbox: Sandbox
) -> None:
    said = cli.ok("dispatches", "test", "--start", "+10m", "--duration", "30m")
    assert said.startswith("created a test dispatch from ") and "(program test)" in said
    assert sandbox.requests.count(POSTED) == 1
    cli.ok("fetch")
    engine = create_engine(cli.url)
    with engine.connect() as conn:
        (row,) = conn.execute(
            select(schema.dispatches).where(schema.dispatches.c.id.like("test%"))
        ).all()
    engine.dispose()
    assert row.test is True and row.authorized is True and row.program_id == 700
    assert row.end_time - row.start_time == timedelta(minutes=30)
    assert row.start_time > utcnow() + timedelta(minutes=9)


def test_a_program_of_the_account_can_be_named(cli: InProcess, sandbox: Sandbox) -> None:
    cli.ok("dispatches", "test", "--start", "now", "--duration", "5m", "--program", "42")
    (created,) = [d for d in sandbox.dispatches if d["id"].startswith("test")]
    assert created["program"]["id"] == 42 and created["test"] is True
    assert {s["id"] for s in created["sites"]} == {s["id"] for s in sandbox.sites}
    unknown = cli("dispatches", "test", "--start", "now", "--duration", "5m", "--program", "9")
    assert unknown.returncode == 3 and "no program 9" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2020-01-01T00:00Z", "--duration", "30m"], "is in the past"),
        (["--start", "+71h", "--duration", "2h"], "more than 72 hours ahead"),
        (["--start", "now", "--duration", "0m"], "must be positive"),
        (["--start", "now", "--duration", "30m", "--program", "0"], "no program has the id 0"),
        (["--start", "tomorrow", "--duration", "30m"], "not a time"),
        (["--start", "9999-12-31T23:59:59Z", "--duration", "1s"], "more than 72 hours ahead"),
        (["--start", "now", "--duration", "5200w"], "more than 72 hours ahead"),
        (["--start", "24h", "--duration", "30m"], "would be a time past: a start is now, +30m"),
    ],
)
def test_what_the_api_would_refuse_is_refused_before_sending(
    cli: InProcess, sandbox: Sandbox, args: list[str], message: str
) -> None:
    result = cli("dispatches", "test", *args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert POSTED not in sandbox.requests


def test_a_failed_request_is_not_sent_again(sandbox: Sandbox) -> None:
    """A retry after a lost answer would create a second dispatch."""
    sandbox.faults.statuses = [503]
    client = VoltusClient(ApiSettings(sandbox.url, sandbox.key))
    with pytest.raises(ApiError, match="failed after 1 attempts"):
        create_test_dispatch.create(client, utcnow(), timedelta(minutes=30), utcnow())
    assert sandbox.requests.count(POSTED) == 1


def test_the_emulator_refuses_what_the_reference_does(sandbox: Sandbox) -> None:
    client = VoltusClient(ApiSettings(sandbox.url, sandbox.key))
    past = utcnow() - timedelta(hours=1)
    with pytest.raises(ApiError, match="HTTP 400"):
        client.create_test_dispatch(past, past + timedelta(minutes=30))
    with pytest.raises(ApiError, match="HTTP 400"):
        client.create_test_dispatch(utcnow(), utcnow() + timedelta(hours=80))
    assert not [d for d in sandbox.dispatches if d["id"].startswith("test")]
