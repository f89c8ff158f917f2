"""The `etl` command as users run it: one clear line for expected failures, never the key."""

import json
import sqlite3
from pathlib import Path

import pytest

from etl import __version__
from etl.sandbox.emulator import Sandbox
from tests.helpers import at, dispatch, log_messages, site
from tests.processes import InProcess, in_process


def assert_one_line_error(result, code: int, text: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = log_messages(result.stderr)
    assert log_messages(result.stderr, "ERROR") == [line] and text in line


def test_fetch_then_fetch_again(cli: InProcess) -> None:
    first = cli("fetch")
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""  # what a fetch did is a diagnostic: timestamped, on stderr
    summary, *events = log_messages(first.stderr, "INFO")
    assert "4 dispatches received: 4 new, 0 changed, 0 unchanged, 0 rejected" in summary
    assert any(e.startswith("dispatch_created: dispatch asdf ") for e in events)
    (second,) = log_messages(cli("fetch").stderr)
    assert "0 new, 0 changed, 4 unchanged" in second and "0 events" in second
    quiet = cli("fetch", "--quiet")
    assert quiet.stdout == quiet.stderr == ""


def test_an_unmigrated_database_says_how_to_fix_it(cli: InProcess, tmp_path: Path) -> None:
    missing = tmp_path / "folder" / "new.db"
    result = cli.on(f"sqlite:///{missing}")("fetch")
    assert_one_line_error(result, 4, "does not exist (run `etl db upgrade` to create it)")
    empty = tmp_path / "empty.db"
    empty.touch()
    result = cli.on(f"sqlite:///{empty}")("fetch")
    assert_one_line_error(result, 4, "has no etl schema (run `etl db upgrade` first)")


@pytest.mark.parametrize("command", [["status"], ["report", "dispatches"], ["audit"]])
def test_commands_that_read_never_create_a_database(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    missing = tmp_path / "folder" / "etl.db"
    result = in_process(monkeypatch, capsys, f"sqlite:///{missing}", *command)
    assert result.returncode == (2 if command == ["status"] else 4)
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["run", "--every", "0"], 2, "'--every': '0' is not a number of seconds from 1 to 86400"),
        (["run", "--every", "nan"], 2, "'--every'"),
        (["run", "--every", "inf"], 2, "'--every'"),
        (["run", "--every", "-1"], 2, "'--every'"),
        (["run", "--every", "1e400"], 2, "'--every'"),
        (["run", "--every", "ten"], 2, "'--every'"),
        (["report", "dispatches", "--program", "99999999999999999999"], 2, "'--program'"),
        (["report", "dispatches", "--since", "999999999d"], 2, "duration too long"),
        (["audit", "--until", "99999999999d"], 2, "duration too long"),
        (["db", "prune", "--older-than", "999999999d"], 2, "duration too long"),
        (["status", "--max-age", "99999999999d"], 3, "duration too long"),
        (["status", "--no-such-option"], 3, "No such option"),
        (["webhooks", "delete", " "], 2, "an empty id names no registration"),
    ],
)
def test_bad_usage_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    text: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'etl.db'}"
    assert in_process(monkeypatch, capsys, url, "db", "upgrade").returncode == 0
    assert_one_line_error(in_process(monkeypatch, capsys, url, *args), code, text)


def test_status_is_critical_in_one_line_when_the_database_cannot_be_read(
    cli: InProcess, tmp_path: Path
) -> None:
    result = cli.on(f"sqlite:///{tmp_path / 'nothing.db'}")("status")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = log_messages(result.stderr, "ERROR")
    assert line.startswith("CRITICAL: database") and "does not exist" in line


def test_a_refused_key_is_one_line_without_the_key(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOLTUS_API_KEY", "my-very-secret-key")
    result = cli("fetch")
    assert_one_line_error(result, 3, "HTTP 403")
    assert "my-very-secret-key" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env_change", "text"),
    [
        ({"ETL_DATABASE_URL": "mysql://x@localhost/db"}, "unsupported database 'mysql'"),
        ({"ETL_DATABASE_URL": "not a url"}, "ETL_DATABASE_URL is not a database URL"),
        (
            {"ETL_DATABASE_URL": "postgresql://u:pw@h:notaport/db"},
            "ETL_DATABASE_URL is not a database URL",
        ),
        (
            {"VOLTUS_API_URL": "https://api.voltus.co", "VOLTUS_API_KEY": ""},
            "VOLTUS_API_KEY is not set",
        ),
    ],
)
def test_bad_configuration_is_one_line(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch, env_change: dict[str, str], text: str
) -> None:
    for name, value in env_change.items():
        if name == "ETL_DATABASE_URL":
            cli = cli.on(value)
        else:
            monkeypatch.setenv(name, value)
    assert_one_line_error(cli("fetch"), 2, text)


def test_an_unreachable_postgresql_is_one_line(cli: InProcess) -> None:
    result = cli.on("postgresql+psycopg://postgres:pw@127.0.0.1:1/none")("fetch")
    assert_one_line_error(result, 4, "database postgresql+psycopg://***@127.0.0.1:1/none")
    assert ":pw@" not in result.stderr


def test_help_never_shows_the_key(cli: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLTUS_API_KEY", "hunter2-key")
    result = cli("fetch", "--help")
    assert result.returncode == 0 and "--api-key" in result.stdout
    assert "hunter2-key" not in result.stdout


def test_run_acts_on_the_store_when_the_fetch_fails_and_says_so(
    cli: InProcess, sandbox: Sandbox
) -> None:
    assert cli("fetch", "-q").returncode == 0  # the built-in `asdf` is active now
    sandbox.key = "rotated"  # Voltus revoked the key
    result = cli("run")
    assert result.returncode == 3
    (error,) = log_messages(result.stderr, "ERROR")
    assert error.startswith("GET") and "HTTP 403" in error
    assert "- Customer location 1 should curtail. Commitment: 12 kW" in result.stdout
    assert "ran 2 succeeded, 0 failed" in log_messages(result.stderr, "INFO")[-1]


def test_process_exits_5_when_an_action_attempt_failed(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_ACTION_COMMAND", "false")
    cli("fetch", "-q")
    result = cli("process")
    assert result.returncode == 5
    (summary,) = log_messages(result.stderr, "INFO")
    assert "ran 0 succeeded, 2 failed" in summary
    (error,) = log_messages(result.stderr, "ERROR")
    assert error.startswith("2 action attempts failed")


def test_a_database_newer_than_this_etl_is_one_line(cli: InProcess, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "etl.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    assert_one_line_error(cli("db", "upgrade"), 4, "older than the database")
    assert_one_line_error(cli("fetch"), 4, "newer than this etl's")


def test_a_command_with_an_unclosed_quote_is_one_line(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_ACTION_COMMAND", "'x")
    assert_one_line_error(cli("process"), 2, "No closing quotation")


def test_a_database_folder_that_cannot_be_made_is_one_line(cli: InProcess) -> None:
    result = cli.on("sqlite:////dev/null/x.db")("db", "upgrade")
    assert_one_line_error(result, 4, "cannot create its folder")


def test_version_is_printed_and_in_status(cli: InProcess) -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout == f"etl {__version__}\n"
    status = cli("status", "--json")
    assert json.loads(status.stdout)["version"] == __version__
    assert f"etl version       {__version__}" in cli("status").stdout


def test_text_a_remote_party_sent_stays_on_its_line_in_what_people_read(
    cli: InProcess, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The API's error message and a handler's stderr are kept as sent, but where a person or a
    monitoring check reads lines (status, audit, a report's table, the webhook list) their line
    breaks are shown escaped: they cannot forge a line such as `CRITICAL: ...`."""
    forged = "\nCRITICAL: forged\r\x1b[2K"
    sandbox.dispatches = [dispatch("d1", site("a"), start_time=at(-1))]
    handler = tmp_path / "handler"
    handler.write_text("#!/bin/sh\nprintf 'boom\\nCRITICAL: forged\\r\\033[2K' >&2\nexit 1\n")
    handler.chmod(0o755)
    monkeypatch.setenv("ETL_ACTION_COMMAND", str(handler))
    assert cli("run").returncode == 5
    sandbox.faults.statuses, sandbox.faults.message = [400], f"refused{forged}"
    assert cli("fetch").returncode == 3
    sandbox.webhooks["w1"] = {"id": "w1", "url": f"http://hook/{forged}", "events": []}

    outputs = {
        "status": cli("status").stdout,
        "audit": cli.ok("audit", "--dispatch", "d1"),
        "report": cli.ok("report", "curtailments", "--format", "table"),
        "webhooks": cli.ok("webhooks", "list"),
    }
    for name, output in outputs.items():
        assert not any(line.startswith("CRITICAL: forged") for line in output.splitlines()), name
        assert "\r" not in output and "\x1b" not in output, name
    assert "refused\\x0aCRITICAL: forged\\x0d\\x1b[2K" in outputs["status"]
    assert "\\x0aCRITICAL: forged" in outputs["audit"]
    assert "http://hook/\\x0aCRITICAL: forged" in outputs["webhooks"]
    assert len(outputs["report"].splitlines()) == 2  # the header and d1's curtail


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "--since", "0001-01-01T00:00:00+14:00"),
        ("report", "dispatches", "--until", "9999-12-31T23:59:59-01:00"),
    ],
)
def test_a_time_beyond_the_calendar_in_utc_is_one_line_exit_2(
    cli: InProcess, args: tuple[str, ...]
) -> None:
    """Valid times whose UTC falls outside years 1 to 9999: an OverflowError traceback before."""
    assert_one_line_error(cli(*args), 2, "not a time: ")


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "--since", "0001-01-01T00:00:00Z", "--until", "9999-12-31T23:59:59Z"),
        ("report", "dispatches", "--since", "0001-01-01", "--until", "9999-12-31T23:59:59Z"),
    ],
)
def test_the_calendars_own_ends_are_usable_bounds(cli: InProcess, args: tuple[str, ...]) -> None:
    assert cli("fetch", "-q").returncode == 0
    result = cli(*args)
    assert result.returncode == 0, result.stderr


def test_an_api_key_beyond_ascii_is_refused_without_echo(cli: InProcess) -> None:
    for command in (("fetch",), ("run",)):
        result = cli(*command, "--api-key", "SECRETключ")
        assert_one_line_error(result, 2, "VOLTUS_API_KEY holds a character that is not ASCII")
        assert "ключ" not in result.stderr and "SECRET" not in result.stderr


@pytest.mark.parametrize("source", ["file", "credential"])
def test_the_key_may_come_from_a_file_or_a_systemd_credential(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: Sandbox, source: str
) -> None:
    monkeypatch.setenv("VOLTUS_API_KEY", "")  # so that the test's environment is restored
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "voltus_api_key").write_text(sandbox.key + "\n")
    if source == "file":
        monkeypatch.setenv("VOLTUS_API_KEY_FILE", str(secrets / "voltus_api_key"))
    else:
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))
    ran = cli("run")
    assert ran.returncode == 0, ran.stderr
    assert sandbox.key not in ran.stdout + ran.stderr
    (secrets / "voltus_api_key").write_text("another-key\n")
    monkeypatch.setenv("VOLTUS_API_KEY", "")  # a new process: read again
    refused = cli("run")  # the file is read at each start: this store's account refuses it
    assert refused.returncode == 2 and "another-key" not in refused.stderr


def test_a_report_shows_the_columns_asked_for_in_their_order(
    cli: InProcess, sandbox: Sandbox
) -> None:
    assert cli("run").returncode == 0
    csv_lines = cli.ok(
        "report", "dispatches", "--format", "csv", "--columns", "outcome,dispatch_id"
    )
    assert csv_lines.splitlines()[0] == "outcome,dispatch_id"
    assert "curtailed,asdf" in csv_lines.splitlines()
    table = cli.ok("report", "curtailments", "--columns", "site_id,action,state")
    assert table.splitlines()[0].split() == ["site_id", "action", "state"]
    for columns, said in (
        ("dispatch_id,nope", "no column 'nope': choose from dispatch_id, program_id"),
        ("outcome,outcome", "a column is named twice"),
        ("", "no column '(an empty name)'"),
        ("a\nb", "no column 'a\\\\x0ab'"),
    ):
        refused = cli("report", "dispatches", "--columns", columns)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    calendar = cli("report", "dispatches", "--format", "ics", "--columns", "outcome")
    assert calendar.returncode == 2 and "a calendar has no columns" in calendar.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("--dispatch", "nosuch"), "no dispatch 'nosuch' in the store"),
        (("--site", "nosuch"), "no site 'nosuch' in the store"),
        (("--dispatch", "d1", "--site", "nosuch"), "no site 'nosuch' in the store"),
    ],
)
def test_an_audit_of_what_the_store_never_saw_is_one_line_exit_2(
    cli: InProcess, sandbox: Sandbox, args: tuple[str, ...], text: str
) -> None:
    sandbox.dispatches = [dispatch("d1", site("a"))]
    assert cli("fetch", "-q").returncode == 0
    assert_one_line_error(cli("audit", *args), 2, text)
    assert_one_line_error(cli("audit", "--jsonl", *args), 2, text)
    # known, but nothing in the window asked for: an empty story, not an error
    quiet = cli("audit", "--dispatch", "d1", "--site", "a", "--until", "2000-01-01")
    assert quiet.returncode == 0 and quiet.stdout == "(no events)\n", quiet.stderr


@pytest.mark.parametrize("command", ["process", "run", "serve"])
def test_the_processor_options_may_follow_the_command(cli: InProcess, command: str) -> None:
    """`etl run --workers 8`, as an operator types it, as well as `etl --workers 8 run`."""
    shorter = "ETL_HANDLER_TIMEOUT_SECONDS (60) must be shorter than ETL_CLAIM_TIMEOUT_SECONDS (30)"
    after = cli(command, "--claim-timeout", "30", "--handler-timeout", "60", "--workers", "8")
    assert_one_line_error(after, 2, shorter)
    both = cli("--claim-timeout", "30", command, "--handler-timeout", "60")
    assert_one_line_error(both, 2, shorter)


def test_an_option_after_the_command_wins_over_one_before_it_and_its_variable(
    cli: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL_HANDLER_TIMEOUT_SECONDS", "400")  # not shorter than the claim's 300
    assert_one_line_error(cli("process"), 2, "must be shorter than")
    assert cli("--handler-timeout", "10", "process").returncode == 0
    assert cli("process", "--handler-timeout", "10").returncode == 0
    assert cli("--handler-timeout", "400", "process", "--handler-timeout", "10").returncode == 0
    result = cli("--handler-timeout", "10", "process", "--handler-timeout", "400")
    assert_one_line_error(result, 2, "must be shorter than")
    monkeypatch.delenv("ETL_HANDLER_TIMEOUT_SECONDS")
    cli("fetch", "-q")
    assert cli("--action-command", "true", "process", "--action-command", "false").returncode == 5
