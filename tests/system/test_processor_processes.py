"""Real `etl` processes: killed with SIGKILL at random points, many at once, and the long-running
loop (woken by a start time, stopped by SIGTERM)."""

import random
import signal
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Row, select

from etl.sandbox.emulator import Sandbox
from etl.store import schema
from tests.helpers import at, dispatch, site
from tests.processes import (
    etl,
    etl_env,
    finish,
    install_recording_handler,
    recorded_calls,
    start_etl,
)
from tests.scenarios import action_states


def dispatches(count: int, sites: int) -> list[dict[str, Any]]:
    return [
        dispatch(f"d{i}", *(site(f"s{i}-{j}") for j in range(sites)), start_time=at(-1))
        for i in range(count)
    ]


def curtails(engine: Engine) -> Sequence[Row]:
    table = schema.actions
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.kind == "curtail")).all()


def attempt_outcomes(engine: Engine) -> dict[int, list[str | None]]:
    table = schema.action_attempts
    outcomes: dict[int, list[str | None]] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(table).order_by(table.c.action_id, table.c.number)):
            outcomes.setdefault(row.action_id, []).append(row.outcome)
    return outcomes


@pytest.mark.serial
def test_processes_killed_at_random_points_lose_nothing_and_succeed_once(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.dispatches = dispatches(8, 6)
    env = etl_env(
        database_url,
        sandbox,
        **install_recording_handler(tmp_path),
        RECORDING_SLEEP="0.05",
        ETL_WORKERS="4",
        ETL_CLAIM_TIMEOUT_SECONDS="1",
        ETL_HANDLER_TIMEOUT_SECONDS="0.5",
    )
    assert etl("fetch", "-q", env=env).returncode == 0
    rng = random.Random(7)
    for _ in range(12):
        calls_before = len(recorded_calls(tmp_path))
        run = start_etl("process", "-q", env=env)
        while len(recorded_calls(tmp_path)) == calls_before and run.poll() is None:
            time.sleep(0.005)  # until its handlers are running
        time.sleep(rng.uniform(0, 0.15))
        run.send_signal(signal.SIGKILL)
        finish(run)
    for _ in range(10):  # after the crashes, ordinary runs finish the work
        if all(a.state == "succeeded" for a in curtails(engine)):
            break
        time.sleep(1.05)  # let the dead processes' claims expire
        assert etl("process", "-q", env=env).returncode == 0

    actions = curtails(engine)
    assert len(actions) == 48 and {a.state for a in actions} == {"succeeded"}
    outcomes = attempt_outcomes(engine)
    invocations = Counter(call[0] for call in recorded_calls(tmp_path))
    for action in actions:
        tries = outcomes[action.id]
        assert tries.count("succeeded") == 1 and tries[-1] == "succeeded", tries
        assert set(tries[:-1]) <= {"abandoned"}, tries
        # invoked again only after a process died with the action in hand, and with the same key
        assert 1 <= invocations[action.idempotency_key] <= len(tries), (tries, invocations)
    assert sum(len(tries) > 1 for tries in outcomes.values()) >= 1, "no kill landed mid-action"
    assert set(invocations) == {a.idempotency_key for a in actions}


def test_many_processors_at_once_run_each_action_once(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    processes = 8 if database_url.startswith("postgresql") else 4
    sandbox.dispatches = dispatches(50, 6)
    env = etl_env(
        database_url,
        sandbox,
        **install_recording_handler(tmp_path),
        RECORDING_SLEEP="0.05",
        ETL_WORKERS="4",
    )
    assert etl("fetch", "-q", env=env).returncode == 0
    runs = [start_etl("process", "-q", env=env) for _ in range(processes)]
    assert [finish(run) for run in runs] == [0] * processes

    actions = curtails(engine)
    assert len(actions) == 300 and {a.state for a in actions} == {"succeeded"}
    invocations = Counter(call[0] for call in recorded_calls(tmp_path))
    assert set(invocations.values()) == {1} and len(invocations) == 300
    assert {len(tries) for tries in attempt_outcomes(engine).values()} == {1}
    assert len({a.claimed_by for a in actions}) > 1, "the work was not shared"


@pytest.mark.serial
def test_run_every_wakes_at_the_start_time_and_stops_cleanly_on_sigterm(
    engine: Engine, database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.dispatches = [dispatch("soon", site("a"), start_time=at(4 / 60), end_time=at(30))]
    env = etl_env(
        database_url, sandbox, **install_recording_handler(tmp_path), RECORDING_SLEEP="1.5"
    )
    started = time.monotonic()
    loop = start_etl("run", "--every", "600", "-q", env=env)
    while not recorded_calls(tmp_path):
        assert time.monotonic() - started < 15, "the curtail did not run at its start time"
        time.sleep(0.02)
    woke_after = time.monotonic() - started
    time.sleep(0.3)  # the handler is now in hand
    loop.send_signal(signal.SIGTERM)
    assert finish(loop, timeout=30) == 0
    assert 3.5 < woke_after < 8  # at the start (4 s), not at the next poll (600 s)
    # the curtail in hand was finished
    assert action_states(engine) == {"succeeded": 1, "waiting": 1}
