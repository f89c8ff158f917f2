"""Handlers in real `etl` processes: a plugin found by its entry point, a refusal to act without a
chosen handler, and commands that must not outlive a processor killed or stopped twice."""

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from etl.sandbox.emulator import Sandbox
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
