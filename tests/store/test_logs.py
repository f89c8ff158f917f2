"""Diagnostics: each stderr line timestamped with a level, or one JSON object; -v and -q; data
stays on stdout; the key never appears."""

import json

import pytest

from etl.sandbox.emulator import Sandbox
from tests.helpers import at, dispatch, log_messages, site
from tests.processes import InProcess


@pytest.fixture
def run(cli: InProcess, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> InProcess:
    """`cli` with one active dispatch of two sites, and a key to look for in the output."""
    sandbox.key = "k3y-never-logged"
    monkeypatch.setenv("VOLTUS_API_KEY", sandbox.key)
    sandbox.dispatches = [dispatch("d1", site("a"), site("b"), start_time=at(-1))]
    return cli


def test_text_lines_have_a_timestamp_and_a_level_and_data_stays_on_stdout(run: InProcess) -> None:
    result = run("run")
    assert result.returncode == 0, result.stderr
    infos = log_messages(result.stderr, "INFO")  # every line has the shape, or this fails
    assert infos[0].startswith("fetch 1: 1 dispatches received: 1 new")
    assert infos[-1] == "process: planned 2 pending; ran 2 succeeded, 0 failed"
    assert log_messages(result.stderr, "DEBUG") == []
    # the log handler's lines are data: on stdout, without timestamps
    assert result.stdout.splitlines()[0] == "Dispatch d1 is in progress"


def test_verbose_shows_each_request_claim_and_handler_call_not_the_key(run: InProcess) -> None:
    result = run("run", "-v")
    debug = log_messages(result.stderr, "DEBUG")
    assert debug[0].startswith("GET /2022-04-15/dispatches: 200 in ") and "(attempt 1)" in debug[0]
    claimed = [line for line in debug if line.endswith("claimed; calling the handler")]
    succeeded = [line for line in debug if line.endswith(") succeeded")]
    assert len(claimed) == len(succeeded) == 2
    assert claimed[0].startswith("curtail site ")
    assert "for dispatch d1 (attempt 1, key " in claimed[0]
    assert "k3y-never-logged" not in result.stdout + result.stderr


def test_quiet_keeps_only_warnings_and_errors(
    run: InProcess, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("fetch", "-q").stderr == ""
    monkeypatch.setenv("ETL_ACTION_COMMAND", "false")
    result = run("process", "-q")
    assert result.returncode == 5
    assert log_messages(result.stderr, "INFO") == []
    warnings = log_messages(result.stderr, "WARNING")
    assert len(warnings) == 2 and all("failed: exit status 1" in w for w in warnings), warnings
    assert log_messages(result.stderr, "ERROR") == [
        "2 action attempts failed; they are retried with backoff while their dispatch is active"
    ]


def test_json_lines_parse_with_time_level_message_and_fields(
    run: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_LOG_FORMAT", "json")
    result = run("run", "--verbose")
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "message"} <= record.keys() for record in records)
    assert all(record["time"].endswith("Z") for record in records)
    (request,) = [r for r in records if r.get("method") == "GET"]
    assert request["path"] == "/2022-04-15/dispatches" and request["status"] == 200
    assert request["level"] == "debug" and isinstance(request["duration_ms"], int)
    claims = [r for r in records if r["message"].endswith("calling the handler")]
    assert {(r["dispatch"], r["site"], r["action"]) for r in claims} == {
        ("d1", "a", "curtail"),
        ("d1", "b", "curtail"),
    }
    assert all(len(r["idempotency_key"]) == 36 for r in claims)
    created = [r for r in records if r.get("event") == "dispatch_created"]
    assert created[0]["dispatch"] == "d1" and created[0]["level"] == "info"


def test_errors_are_log_lines_in_json_too(run: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_LOG_FORMAT", "json")
    monkeypatch.setenv("VOLTUS_API_KEY", "wrong-key-zz")
    result = run("fetch")
    assert result.returncode == 3
    (record,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert record["level"] == "error" and "HTTP 403" in record["message"]
    assert "wrong-key-zz" not in result.stderr


def test_an_unknown_log_format_says_so_and_writes_text(
    run: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_LOG_FORMAT", "xml")
    result = run("fetch")
    assert result.returncode == 0
    (warning,) = log_messages(result.stderr, "WARNING")
    assert warning.startswith("ETL_LOG_FORMAT='xml' is not one of")
