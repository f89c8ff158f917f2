"""Running the real `etl` command: in subprocesses, as cron would, or by its own `main` in the
test's process where a subprocess would prove nothing more."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from etl.cli import main
from etl.sandbox.emulator import Sandbox


def etl_env(database_url: str, sandbox: Sandbox | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ETL_DATABASE_URL": database_url, **extra}
    if sandbox is not None:
        env.update({"VOLTUS_API_URL": sandbox.url, "VOLTUS_API_KEY": sandbox.key})
    return env


def etl(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_etl(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lock_is_held(database_url: str, lock_name: str) -> bool:
    """Whether some process holds etl's named write lock (on SQLite, the database's write lock)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None, "the lock is held in a SQLite file, not in memory"
        probe = sqlite3.connect(url.database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        finally:
            if probe.in_transaction:
                probe.execute("ROLLBACK")
            probe.close()
        return False
    conninfo = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as pg_probe:
        got = pg_probe.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [lock_name]).fetchone()
        if got and got[0]:
            pg_probe.execute("SELECT pg_advisory_unlock(hashtext(%s))", [lock_name])
            return False
    return True


def finish(process: subprocess.Popen[str], timeout: float = 120) -> int:
    """Wait for the process and close its pipes; its stderr goes to ours, for the test report."""
    _, stderr = process.communicate(timeout=timeout)
    sys.stderr.write(stderr)
    return process.returncode


PLUGIN_DIR = Path(__file__).parent / "plugin"


def install_entry_point(site: Path, group: str, entry: str) -> None:
    """An entry point of `group` (`NAME = module:callable`) in `site`, as an installed package
    declares one: a dist-info folder, for `site` on the path."""
    name = entry.split("=")[0].strip()
    dist_info = site / f"etl_test_{name}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: etl-test-{name}\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")


def install_recording_handler(tmp_path: Path) -> dict[str, str]:
    """Make `recording` an `etl.handlers` entry point for subprocesses, the way an installed
    package would: a dist-info folder on the path. Returns the environment to add."""
    install_entry_point(tmp_path / "site", "etl.handlers", "recording = recording_handler:handle")
    path = os.pathsep.join([str(tmp_path / "site"), str(PLUGIN_DIR)])
    return {
        "PYTHONPATH": path,
        "ETL_HANDLER": "recording",
        "RECORDING_FILE": str(tmp_path / "calls.txt"),
    }


def recorded_calls(tmp_path: Path) -> list[list[str]]:
    calls = tmp_path / "calls.txt"
    return [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []


def in_process(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    *args: str,
) -> subprocess.CompletedProcess[str]:
    """`etl ARGS` run by its own `main` in this process (quicker than a subprocess, where one
    proves nothing more), with what a subprocess would give back. The signal handlers that
    `etl run` installs are the test process's again afterwards."""
    monkeypatch.setattr(sys, "argv", ["etl", *args])
    monkeypatch.setenv("ETL_DATABASE_URL", database_url)
    capsys.readouterr()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    out = capsys.readouterr()
    code = exited.value.code
    return subprocess.CompletedProcess(args, code if isinstance(code, int) else 1, out.out, out.err)


class InProcess:
    """`etl ARGS` by its own `main` in this process, against one store."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
    ) -> None:
        self.monkeypatch, self.capsys, self.url = monkeypatch, capsys, url

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return in_process(self.monkeypatch, self.capsys, self.url, *args)

    def on(self, url: str) -> "InProcess":
        """The command against another store."""
        return InProcess(self.monkeypatch, self.capsys, url)

    def ok(self, *args: str) -> str:
        """Its stdout, after checking that it succeeded."""
        result = self(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
