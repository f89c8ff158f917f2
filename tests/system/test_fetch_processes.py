"""Real `etl fetch` processes: overlapping cron runs, and runs killed with SIGKILL mid-write."""

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from etl.sandbox.emulator import Sandbox
from etl.store import schema
from etl.store.fetch_runs import FETCH_LOCK
from tests.helpers import dispatch, site
from tests.processes import (
    etl_env,
    finish,
    install_recording_handler,
    lock_is_held,
    recorded_calls,
    start_etl,
)


def many_dispatches(n: int, authorized: bool = True) -> list[dict[str, Any]]:
    return [
        dispatch(f"d{i}", *(site(f"s{(i + j) % 300}", j) for j in range(4)), authorized=authorized)
        for i in range(n)
    ]


def snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        tables = [schema.dispatches, schema.dispatch_sites, schema.events, schema.fetch_runs]
        counts = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in tables
        }
        authorized_column = schema.dispatches.c.authorized
        authorized = conn.execute(
            select(authorized_column, func.count()).group_by(authorized_column)
        ).all()
    return {**counts, "authorized": dict(authorized)}


@pytest.mark.parametrize("processes", [4])
def test_overlapping_fetches_store_everything_once(
    engine: Engine, database_url: str, sandbox: Sandbox, processes: int
) -> None:
    sandbox.dispatches = many_dispatches(1000)
    env = etl_env(database_url, sandbox)
    runs = [start_etl("fetch", "-q", env=env) for _ in range(processes)]
    assert [finish(run) for run in runs] == [0] * processes
    state = snapshot(engine)
    assert state["dispatches"] == 1000 and state["dispatch_sites"] == 4000
    with engine.connect() as conn:
        created = conn.execute(
            select(func.count()).where(schema.events.c.kind == "dispatch_created")
        ).scalar_one()
        per_run = conn.execute(select(schema.fetch_runs.c.dispatches_created)).scalars().all()
    assert created == 1000
    assert sorted(per_run) == [0] * (processes - 1) + [1000]


def test_a_fetch_killed_inside_its_transaction_leaves_no_trace(
    engine: Engine, database_url: str, sandbox: Sandbox
) -> None:
    sandbox.dispatches = many_dispatches(1500)
    env = etl_env(database_url, sandbox)
    assert finish(start_etl("fetch", "-q", env=env)) == 0
    before = snapshot(engine)
    sandbox.dispatches = many_dispatches(1500, authorized=False)  # every dispatch cancelled

    untouched = 0
    for _ in range(5):
        run = start_etl("fetch", "-q", env=env)
        deadline = time.monotonic() + 60
        while not lock_is_held(database_url, FETCH_LOCK) and run.poll() is None:
            assert time.monotonic() < deadline, "the fetch never took its lock"
        run.send_signal(signal.SIGKILL)
        finish(run)
        after = snapshot(engine)
        if run.returncode == -signal.SIGKILL and after == before:
            untouched += 1
        else:  # it committed just before the kill: then all of it is there
            assert after["authorized"] == {False: 1500}
            break
    assert untouched >= 1

    assert finish(start_etl("fetch", "-q", env=env)) == 0
    assert snapshot(engine)["authorized"] == {False: 1500}


def test_an_older_snapshot_that_commits_last_changes_nothing(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Run A reads the listing first, from a slow API, and commits last; run B reads a newer
    listing later and commits first. A must not undo B: no site removed, no restore. The bodies
    carry no modification numbers, so only the listing's time can tell them apart."""
    older = dispatch("a1", site("s1"))
    newer = dispatch("a1", site("s1"), site("s2"))
    recording = install_recording_handler(tmp_path)
    sandbox.dispatches = [older]
    assert finish(start_etl("run", "-q", env=etl_env(database_url, sandbox, **recording))) == 0
    env = etl_env(database_url, sandbox, **recording)
    asked = len(sandbox.requests)
    sandbox.faults.delay_seconds = 3  # A's listing is slow to come
    run_a = start_etl("run", "-q", env=env)
    deadline = time.monotonic() + 30
    while len(sandbox.requests) == asked:  # A has asked for its listing
        assert time.monotonic() < deadline and run_a.poll() is None
        time.sleep(0.01)
    sandbox.faults.delay_seconds = 0  # A's request has taken its delay; B's has none
    sandbox.dispatches = [newer]
    run_b = start_etl("run", "-q", env=env)
    assert finish(run_b) == 0
    assert run_a.poll() is None, "A finished before B: the race did not happen"
    assert finish(run_a) == 0

    calls = [(action, site_id) for _, action, _, site_id, _ in recorded_calls(tmp_path)]
    assert calls == [("curtail", "s1"), ("curtail", "s2")]
    with engine.connect() as conn:
        outcomes = conn.execute(
            select(schema.fetch_runs.c.outcome).order_by(schema.fetch_runs.c.id)
        ).scalars()
        removed = conn.execute(
            select(func.count()).where(schema.events.c.kind == "dispatch_site_removed")
        ).scalar_one()
    assert list(outcomes) == ["succeeded", "succeeded", "superseded"] and removed == 0
