"""Handlers in real `etl` processes: a plugin found by its entry point, a refusal to act without a
chosen handler, and commands that must not outlive a processor killed or stopped twice."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from etl.sandbox.emulator import Sandbox
from etl.store import schema
from tests.helpers import at, dispatch, log_messages, site, wait_for
from tests.processes import (
    etl,
    etl_env,
    finish,
    install_recording_handler,
    recorded_calls,
    start_etl,
)
from tests.scenarios import active
from tests.store.test_handler_faults import script


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def run_with_command(tmp_path: Path, sandbox: Any, body: str) -> subprocess.Popen[str]:
    """`etl run` with a command handler of this shell `body`, for dispatch d1's site a."""
    command = script(tmp_path, "handler.sh", body)
    env = etl_env(f"sqlite:///{tmp_path / 'etl.db'}", sandbox, ETL_ACTION_COMMAND=command)
    sandbox.dispatches = [active("d1", site("a"))]
    assert etl("db", "upgrade", env=env).returncode == 0
    return start_etl("--handler-timeout", "100", "run", env=env)


@pytest.mark.serial
def test_a_handler_dies_with_a_processor_killed_by_sigkill(tmp_path: Path, sandbox: Any) -> None:
    """A processor killed with kill -9 must not leave its handler running unbounded beside the
    process that will take the action over."""
    pid_file = tmp_path / "handler.pid"
    run = run_with_command(tmp_path, sandbox, f"echo $$ > {pid_file}; exec sleep 120")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 30)
    handler_pid = int(pid_file.read_text())
    assert alive(handler_pid)
    os.kill(run.pid, signal.SIGKILL)
    finish(run)
    started = time.monotonic()
    wait_for(lambda: not alive(handler_pid), 1)
    assert time.monotonic() - started < 1


@pytest.mark.serial
def test_a_second_signal_stops_the_processor_and_its_handlers_process_groups(
    tmp_path: Path, sandbox: Any
) -> None:
    pids = tmp_path / "pids"
    run = run_with_command(tmp_path, sandbox, f"sleep 120 & echo $$ $! > {pids}; wait")
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30)
    handler_pid, grandchild_pid = map(int, pids.read_text().split())
    run.send_signal(signal.SIGTERM)  # the first: finish the actions in hand
    time.sleep(0.5)
    assert alive(handler_pid) and run.poll() is None
    run.send_signal(signal.SIGTERM)  # the second: stop now, and take the handlers along
    assert finish(run) == -signal.SIGTERM
    wait_for(lambda: not alive(handler_pid) and not alive(grandchild_pid), 2)


def test_an_entry_point_handler_runs_in_the_real_command(tmp_path: Path, sandbox: Sandbox) -> None:
    env = etl_env(
        f"sqlite:///{tmp_path / 'etl.db'}", sandbox, **install_recording_handler(tmp_path)
    )
    sandbox.dispatches = [dispatch("d1", site("a"), start_time=at(-1))]
    assert etl("db", "upgrade", env=env).returncode == 0
    result = etl("run", env=env)
    assert result.returncode == 0, result.stderr
    assert "ran 1 succeeded, 0 failed" in log_messages(result.stderr)[-1]
    assert [call[1:4] for call in recorded_calls(tmp_path)] == [["curtail", "d1", "a"]]


def test_process_refuses_to_start_without_a_handler_against_a_real_api(tmp_path: Path) -> None:
    env = etl_env(f"sqlite:///{tmp_path / 'etl.db'}", VOLTUS_API_URL="https://api.voltus.co")
    assert etl("db", "upgrade", env=env).returncode == 0
    for command in ("process", "run", "serve"):
        result = etl(command, env={**env, "VOLTUS_API_KEY": "k"})
        assert result.returncode == 2 and "no handler is chosen" in result.stderr
    assert etl("process", env={**env, "ETL_HANDLER": "log"}).returncode == 0


# one run on each database in the slow tier (about 8 s each); the 20 in a row:
# ETL_STRESS_RUNS=20 pytest tests/system/test_handler_processes.py -k first_attempt
STRESS_RUNS = int(os.environ.get("ETL_STRESS_RUNS", "1"))


def test_six_processors_at_once_give_each_command_its_request_on_the_first_attempt(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Six `etl process` at once, 2 dispatches x 120 sites, a command that reads its stdin: in 2
    runs of 4, one or two curtails waited the whole handler timeout for a request never written,
    failed "timed out", and waited their backoff. Every run: each curtail done at its first
    attempt, its command given its own request."""
    command = script(tmp_path, "reads-stdin.sh", "cat")
    env = etl_env(database_url, sandbox, ETL_ACTION_COMMAND=command)
    env["ETL_HANDLER_TIMEOUT_SECONDS"] = "20"  # a lost request fails the test in 20 s, not 60
    assert etl("db", "upgrade", env=env).returncode == 0
    for run in range(STRESS_RUNS):
        sandbox.dispatches = [
            dispatch(
                f"r{run}d{i}", *(site(f"r{run}s{i}-{j}") for j in range(120)), start_time=at(-1)
            )
            for i in range(2)
        ]
        assert etl("fetch", "-q", env=env).returncode == 0
        processors = [start_etl("process", "-q", env=env) for _ in range(6)]
        assert [finish(p) for p in processors] == [0] * 6
        attempts = first_attempts(engine, f"r{run}")
        assert len(attempts) == 240, f"run {run}"
        for site_id, outcomes in attempts.items():
            assert [outcome for outcome, _ in outcomes] == ["succeeded"], f"run {run}: {site_id}"
            assert json.loads(outcomes[0][1])["site_id"] == site_id


def first_attempts(engine: Engine, prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Each curtail of the dispatches named `prefix...`: its attempts' outcomes and outputs."""
    actions, attempts = schema.actions, schema.action_attempts
    found: dict[str, list[tuple[str, str]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(actions.c.site_id, attempts.c.outcome, attempts.c.output)
            .join(attempts, attempts.c.action_id == actions.c.id)
            .where(actions.c.kind == "curtail", actions.c.dispatch_id.startswith(prefix))
            .order_by(attempts.c.number)
        )
        for row in rows:
            found.setdefault(row.site_id, []).append((row.outcome, row.output))
    return found
