"""The `etl` command in real processes, where one proves more than `main` in the test's process:
what reaches the file descriptors, a store locked by another process, what a fresh interpreter
imports, the machine's time zone."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import select

from etl.act import planner
from etl.sandbox.emulator import Sandbox
from etl.store import fetch_runs
from etl.store.db import SCHEMA_REVISION, make_engine
from etl.store.schema import metadata
from tests.helpers import log_messages
from tests.processes import etl, etl_env, start_etl
from tests.store.test_cli import assert_one_line_error


def test_no_secret_reaches_any_message_or_record(
    database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A key with a control character, a wrong key, a database password given as a query
    parameter (PostgreSQL), a webhook URL with credentials: after a run of every command, none
    of them is in any output or in any table."""
    secrets = ["hunter2-db", "w3bh00k-pw", "t0k3n-zz", "key-with-cr", "wrong-key-qq"]
    if database_url.startswith("postgresql"):
        database_url += "&password=hunter2-db"
    webhook = "http://user:w3bh00k-pw@127.0.0.1:9/hook?token=t0k3n-zz"
    env = etl_env(database_url, sandbox, ETL_ACTION_WEBHOOK=webhook)
    results = [
        etl("db", "upgrade", env=env),
        etl("run", env=env),  # the webhook refuses: attempts fail with its URL in the error
        etl("fetch", env={**env, "VOLTUS_API_KEY": "key-with-cr\r"}),
        etl("fetch", env={**env, "VOLTUS_API_KEY": "wrong-key-qq"}),
        etl("status", env=env),
        etl("status", "--json", env=env),
        etl("audit", "--jsonl", env=env),
        etl("report", "curtailments", "--format", "json", env=env),
    ]
    assert [r.returncode for r in results[:4]] == [0, 5, 2, 2]
    assert "VOLTUS_API_KEY holds whitespace" in results[2].stderr
    assert "this store serves another account" in results[3].stderr
    engine = make_engine(database_url, create=False)
    with engine.connect() as conn:
        tables = [str(conn.execute(select(table)).all()) for table in metadata.sorted_tables]
    engine.dispose()
    assert "POST http://***@127.0.0.1:9/hook?token=***" in "".join(tables)
    everything = "".join(r.stdout + r.stderr for r in results) + "".join(tables)
    assert [secret for secret in secrets if secret in everything] == []


@contextmanager
def held_store(database_url: str) -> Iterator[None]:
    """Another writer that does not let go: on SQLite the write lock; on PostgreSQL the
    locks a stuck etl would hold, the fetch's and the planner's."""
    if database_url.startswith("sqlite"):
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    with psycopg.connect(database_url.replace("+psycopg", "")) as locker:  # in a transaction
        for name in (fetch_runs.FETCH_LOCK, planner.PLAN_LOCK):
            locker.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
        yield


def test_a_minutely_run_against_a_locked_store_ends_within_the_minute(
    database_url: str, sandbox: Sandbox
) -> None:
    env = etl_env(database_url, sandbox)
    assert etl("db", "upgrade", env=env).returncode == 0
    with held_store(database_url):
        started = time.monotonic()
        result = etl("run", env=env, timeout=120)
        elapsed = time.monotonic() - started
    assert result.returncode == 4 and elapsed < 50, (result.returncode, elapsed)
    assert "Traceback" not in result.stderr
    assert "another process held the database too long" in result.stderr
    assert log_messages(result.stderr, "ERROR") == log_messages(result.stderr)


def test_the_minutely_run_loads_no_library_it_does_not_use(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """A dependency used by one command is imported by that command only: `etl run` pays for
    neither the ORM, Alembic, the emulator, the reports, nor the metrics and server libraries."""
    env = etl_env(f"sqlite:///{tmp_path / 'etl.db'}", sandbox)
    assert etl("db", "upgrade", env=env).returncode == 0
    probe = (
        "import sys\n"
        "from etl.cli import main\n"
        "sys.argv = ['etl', 'run', '-q']\n"
        "try:\n    main()\n"
        "finally:\n    print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stderr.split())
    assert "etl.ingest.dispatches" in loaded and "sqlalchemy" in loaded
    unwanted = {
        "sqlalchemy.orm", "alembic", "etl.store.migrate", "etl.sandbox.emulator",
        "etl.read.reports", "etl.read.audit", "etl.read.metrics", "etl.serve",
        "etl.ingest.telemetry", "etl.read.chart", "prometheus_client", "waitress", "pydantic",
        "sqlalchemy.dialects.postgresql", "dateutil", "http.server", "icalendar",
        "etl.read.calendar", "etl.ingest.readings", "etl.ingest.sources", "apprise",
        "etl.console", "etl.console.app", "etl.read.pages", "jinja2", "markupsafe",
        "openleadr", "aiohttp", "etl.devices.openadr_vtn", "etl.devices.openadr_handler",
        "pymodbus", "etl.devices.modbus", "etl.devices.modbus_link",
    }  # fmt: skip
    assert loaded & unwanted == set()


def test_a_time_zone_this_machine_cannot_use_is_one_line_exit_2(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    env = etl_env(f"sqlite:///{tmp_path / 'etl.db'}", sandbox, TZ="XXX-99:99")
    assert etl("db", "upgrade", env=env).returncode == 0
    assert etl("fetch", "-q", env=env).returncode == 0
    result = etl("report", "dispatches", "--tz", "local", env=env)
    assert_one_line_error(result, 2, "this machine's time zone cannot be used")


def test_two_upgrades_at_once_each_say_what_they_found(database_url: str) -> None:
    """Before, both printed "migrated from empty": each read the revision outside the lock."""
    env = etl_env(database_url)
    runs = [start_etl("db", "upgrade", env=env) for _ in range(2)]
    outputs = sorted(run.communicate(timeout=120)[0] for run in runs)
    assert [run.returncode for run in runs] == [0, 0]
    assert outputs[0].endswith(f"schema already at revision {SCHEMA_REVISION}\n"), outputs
    assert outputs[1].endswith(f"schema migrated from empty to {SCHEMA_REVISION}\n"), outputs


def test_lines_to_the_journal_carry_their_priority_and_no_timestamp(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """As under systemd: stderr is the journal's stream, which JOURNAL_STREAM names."""
    env = etl_env(f"sqlite:///{tmp_path / 'etl.db'}", sandbox)
    assert etl("db", "upgrade", env=env).returncode == 0
    journal = tmp_path / "journal"

    def journal_lines(*args: str, log_format: str = "text") -> list[str]:
        with journal.open("w") as stream:
            stat = journal.stat()
            subprocess.run(
                [sys.executable, "-m", "etl", *args], stderr=stream, timeout=60,
                env={**env, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
                     "ETL_LOG_FORMAT": log_format},
            )  # fmt: skip
        return journal.read_text().splitlines()

    lines = journal_lines("run") + journal_lines("fetch", "--since", "never")
    assert lines[0].startswith("<6>INFO fetch ")
    assert lines[-1].startswith("<3>ERROR ") and "\n" not in lines[-1]
    assert all(line[:1] == "<" and line[3:4] in "IWED" for line in lines), lines
    as_json = journal_lines("run", log_format="json")
    as_json += journal_lines("fetch", "--since", "never", log_format="json")
    assert as_json[0].startswith("<6>{") and as_json[-1].startswith("<3>{")
    levels = {"<6>": "info", "<4>": "warning", "<3>": "error"}
    assert all(json.loads(line[3:])["level"] == levels[line[:3]] for line in as_json), as_json
    # a stream the journal did not open (stderr redirected by a script): etl's own lines
    redirected = etl("run", env={**env, "JOURNAL_STREAM": "1:2"})
    assert log_messages(redirected.stderr)  # every line timestamped, as etl writes them


def test_the_shell_completes_commands_and_options() -> None:
    """As bash asks, once `etl --install-completion` has put etl's script in place."""

    def complete(*words: str) -> list[str]:
        env = {**os.environ, "_ETL_COMPLETE": "complete_bash", "COMP_CWORD": str(len(words))}
        env["COMP_WORDS"] = " ".join(["etl", *words])
        done = subprocess.run(
            [str(Path(sys.executable).parent / "etl")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.split()

    assert complete("re") == ["report"]
    assert complete("db", "") == ["upgrade", "current", "downgrade", "bind", "prune", "measure"]
    assert "--every" in complete("run", "--")
