"""A handler's outcome survives the store's hiccups in a real `etl run`: the store locked past
the real 10 s busy timeout, or PostgreSQL ending its connection mid-handler. No handler runs
twice (tests/store/test_store_outages.py has the quick, in-process cases)."""

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

from etl.sandbox.emulator import Sandbox
from tests.helpers import log_messages, site, wait_for
from tests.outages import hold_store, kill_connections, victim
from tests.processes import etl, etl_env, finish, start_etl
from tests.scenarios import active
from tests.store.test_store_outages import curtail_states


def test_etl_run_records_its_outcomes_through_a_store_locked_past_its_busy_timeout(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Real SQLite, real processes: the handler runs 2 s; meanwhile another process holds the
    store for 14 s, past the 10 s busy timeout of the outcome writes that wait for it. Each
    handler runs once; the run exits 0."""
    url = f"sqlite:///{tmp_path / 'etl.db'}"
    calls = tmp_path / "calls"
    command = tmp_path / "slow.sh"
    command.write_text(f"#!/bin/sh\necho $ETL_IDEMPOTENCY_KEY >> {calls}\nsleep 2\n")
    command.chmod(0o755)
    env = etl_env(url, sandbox, ETL_ACTION_COMMAND=str(command))
    sandbox.dispatches = [active("d1", site("a"), site("b"), site("c"))]
    assert etl("db", "upgrade", env=env).returncode == 0
    run = start_etl("run", env=env)
    wait_for(lambda: calls.exists() and len(calls.read_text().split()) == 3, 30)
    locker = hold_store(url, 14)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    locker.join()
    warnings = log_messages(stderr, "WARNING")
    assert warnings[0].startswith("the store is unavailable (database sqlite:")
    assert "database is locked" in warnings[0]
    assert warnings[1].startswith("the store answered again after ")
    assert "ran 3 succeeded, 0 failed" in log_messages(stderr)[-1]
    again = etl("run", env=env)
    assert again.returncode == 0, again.stderr
    assert "ran 0 succeeded" in log_messages(again.stderr)[-1]
    assert sorted(Counter(calls.read_text().split()).values()) == [1, 1, 1]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_etl_run_records_its_outcomes_though_postgresql_ended_its_connection(
    sandbox: Sandbox, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    command = tmp_path / "slow.sh"
    command.write_text(f"#!/bin/sh\necho $ETL_IDEMPOTENCY_KEY >> {calls}\nsleep 1\n")
    command.chmod(0o755)
    env = etl_env(victim(database_url), sandbox, ETL_ACTION_COMMAND=str(command))
    sandbox.dispatches = [active("d1", site("a"), site("b"))]
    run = start_etl("run", env=env)
    wait_for(lambda: calls.exists() and len(calls.read_text().split()) == 2, 30)
    assert kill_connections(database_url) >= 1
    assert finish(run, timeout=60) == 0
    assert curtail_states(engine) == ["succeeded"] * 2
    assert sorted(Counter(calls.read_text().split()).values()) == [1, 1]
