"""`etl status --format prometheus`, read back with prometheus_client's own parser."""

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, delete, event, func, select, update

from etl import __version__
from etl.act import planner
from etl.read import metrics, status
from etl.sandbox.emulator import Sandbox
from etl.store import kept_counts, schema
from etl.store.db import SCHEMA_REVISION, make_engine
from etl.store.migrate import migrate
from tests.helpers import at, dispatch, site, wait_for
from tests.processes import InProcess, in_process
from tests.scenarios import World, active, ended


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_of_a_store_that_curtailed_and_failed(
    cli: InProcess, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.dispatches = [
        dispatch("d1", site("a"), site("b"), start_time=at(-1)),
        dispatch("d2", site("c"), start_time=at(-1), end_time=at(30)),
    ]
    cli.ok("fetch")
    monkeypatch.setenv("ETL_ACTION_COMMAND", "sh -c 'test $ETL_SITE_ID != c'")  # c fails
    assert cli("process").returncode == 5
    started = time.time()

    result = cli("status", "--format", "prometheus")

    # a failed attempt is retried, and heard at once: its site is not curtailed
    assert result.returncode == 1, result.stderr
    found = samples(result.stdout)
    assert found[("etl_info", (("schema", SCHEMA_REVISION), ("version", __version__)))] == 1
    assert found[("etl_status", ())] == 1
    assert started - 60 < found[("etl_last_fetch_success_timestamp_seconds", ())] <= started
    assert found[("etl_last_fetch_failure_timestamp_seconds", ())] == 0  # never
    assert abs(found[("etl_api_clock_offset_seconds", ())]) <= 1  # the emulator keeps time
    by_state = {labels[0][1]: v for (name, labels), v in found.items() if name == "etl_actions"}
    assert by_state["succeeded"] == 2 and by_state["waiting"] == 2  # a and b; their restores
    assert by_state["retrying"] == 1 and by_state["failed"] == 0  # c, retried while d2 runs
    assert found[("etl_action_attempts_failed_total", ())] == 1
    assert found[("etl_actions_failed_total", ())] == 0
    assert found[("etl_actions_missed_total", ())] == 0
    assert found[("etl_dispatches_holding_sites", ())] == 2


def by_kind(text: str, name: str) -> dict[str, float]:
    return {
        dict(labels)["kind"]: value for (n, labels), value in samples(text).items() if n == name
    }


# the command runs in this process, where `etl status` on PostgreSQL leaves a connection for the
# garbage collector (a ResourceWarning); tests/store/test_failing.py finds the failing actions
# on both databases
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@ON_SQLITE
def test_a_curtail_failing_now_is_a_gauge_late_after_the_act_within_until_it_succeeds(
    world: World, cli: InProcess, database_url: str
) -> None:
    """What an alert rule reads within a minute: not the attempts' counter, which rises the
    same whether a site is failing now or an action failed once and succeeded on retry."""
    etl = cli.on(database_url)

    def failing(*options: str) -> tuple[dict[str, float], dict[str, float]]:
        text = etl("status", "--format", "prometheus", *options).stdout
        return by_kind(text, "etl_actions_failing"), by_kind(text, "etl_actions_failing_late")

    world.handler.fail_first = 2
    world.step(active("d1", site("a"), site("b")))  # a and b fail their first attempt
    assert failing() == ({"curtail": 2, "restore": 0}, {"curtail": 0, "restore": 0})
    # the same store, once the time to act has passed: the sites cost their commitment
    late = failing("--act-within", "0s")
    assert late == ({"curtail": 2, "restore": 0}, {"curtail": 2, "restore": 0})

    def curtailed() -> bool:
        world.process()  # after the retry's backoff: the second attempt fails, the third works
        curtails = {s for (kind, _, _), s in world.states().items() if kind == "curtail"}
        return curtails == {"succeeded"}

    wait_for(curtailed, seconds=30)
    assert failing("--act-within", "0s") == ({"curtail": 0, "restore": 0},) * 2


@ON_SQLITE
def test_past_failures_not_acknowledged_are_a_gauge_until_acknowledged(
    world: World, cli: InProcess, database_url: str
) -> None:
    """Yesterday's failure is counted apart from those failing now, and leaves the count once
    someone sees to it: an alert on it need not page, and stops."""
    etl = cli.on(database_url)

    def counted() -> tuple[dict[str, float], dict[str, float]]:
        text = etl("status", "--format", "prometheus").stdout
        past = by_kind(text, "etl_actions_failed_unacknowledged")
        return past, by_kind(text, "etl_actions_failing")

    world.step()  # the store's first fetch: what ends after it and was not acted on is missed
    world.step(ended("miss", site("d")))
    assert counted() == ({"curtail": 1, "restore": 0}, {"curtail": 0, "restore": 0})
    etl.ok("ack", "--reason", "told the customer", "--by", "ana", "--all")
    assert counted() == ({"curtail": 0, "restore": 0},) * 2


def test_an_unreadable_store_is_still_a_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    result = in_process(monkeypatch, capsys, url, "status", "--format", "prometheus")
    assert result.returncode == 2 and "does not exist" in result.stderr
    found = samples(result.stdout)
    assert found[("etl_status", ())] == 2
    assert found[("etl_info", (("schema", ""), ("version", __version__)))] == 1
    assert not (tmp_path / "missing.db").exists()


def test_the_counts_read_no_history(tmp_path: Path) -> None:
    """Status and metrics run every minute over years of history: at 8 million actions their
    counts took 0.65 s and 1.5 s while they read the actions table, and the metrics 0.31 s
    while they read an index entry per action. Now the status check only seeks, and the metrics
    read the open actions' partial index and the kept counts (etl.store.kept_counts): no statement
    of theirs reads a finished action or an attempt (SQLite's plans; PostgreSQL has the same
    tables and indexes)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'etl.db'}")
    migrate(engine)

    def plans_of(call: Callable[[], object]) -> dict[str, list[str]]:
        statements: list[tuple[str, Any]] = []

        def keep(_conn: Any, _cur: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
            if sql.startswith(("SELECT", "WITH")):
                statements.append((sql, params))

        event.listen(engine, "before_cursor_execute", keep)
        call()
        event.remove(engine, "before_cursor_execute", keep)
        with engine.connect() as conn:
            return {
                sql: [
                    step[-1] for step in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
                ]
                for sql, params in statements
            }

    checked = plans_of(lambda: status.check(engine, timedelta(minutes=10), timedelta(hours=24)))
    on_actions = [s for sql, steps in checked.items() if " actions" in sql for s in steps]
    assert on_actions and all(step.startswith("SEARCH") for step in on_actions), on_actions
    counted = plans_of(lambda: metrics.store_counts(engine))
    assert not [sql for sql in counted if "action_attempts" in sql]
    on_actions = [s for sql, steps in counted.items() if " actions" in sql for s in steps]
    # the open actions only: seeks of those whose finished_at is null, state by state
    assert on_actions and all(step.startswith("SEARCH") for step in on_actions), on_actions
    others = [s for sql, steps in counted.items() if " actions" not in sql for s in steps]
    scans = {step for step in others if step.startswith("SCAN")}
    # the kept counts, whole (a row per count, and the changes since the last plan)
    assert scans <= {"SCAN store_counts", "SCAN store_count_changes", "SCAN anon_1"}, counted


def counted_directly(engine: Engine) -> dict[str, int]:
    """What the kept counts must say, counted over every row."""
    actions, attempts = schema.actions.c, schema.action_attempts.c
    with engine.connect() as conn:
        states = conn.execute(
            select(actions.state, func.count())
            .where(actions.finished_at.is_not(None))
            .group_by(actions.state)
        ).all()
        failed = conn.execute(select(func.count()).where(attempts.outcome == "failed")).scalar()
    return {f"finished_{state}": n for state, n in states} | {"attempts_failed": failed}


def kept(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        found = kept_counts.read(conn)
    return {"attempts_failed": 0} | {name: n for name, n in found.items() if n}


def test_the_kept_counts_follow_every_change_whoever_makes_it(world: World) -> None:
    """Actions planned, claimed, failed, retried, succeeded, restored, missed, and rows changed
    and deleted by a person's SQL: the kept counts say what counting every row says, before a
    plan folds the changes in and after."""
    world.handler.fail_first = 1  # each action fails once, then succeeds
    world.step(active("d1", site("a"), site("b")), ended("old", site("c")))
    assert kept(world.engine) == counted_directly(world.engine)
    world.sandbox.dispatches = [active("d1", site("a"), site("b"), end_time=at(-0.01))]
    time.sleep(world.settings.retry_backoff)
    world.step(*world.sandbox.dispatches)
    time.sleep(world.settings.retry_backoff * 2)
    world.process()  # the restores' second attempts succeed
    assert {"finished_failed", "finished_succeeded", "finished_skipped"} <= set(kept(world.engine))
    assert kept(world.engine) == counted_directly(world.engine)
    with world.engine.begin() as conn:
        conn.execute(
            update(schema.action_attempts).where(schema.action_attempts.c.number == 1)
            .values(outcome="succeeded")
        )  # fmt: skip
        conn.execute(update(schema.actions).values(note="by hand"))  # no state changes
        conn.execute(delete(schema.action_attempts))
        conn.execute(delete(schema.actions).where(schema.actions.c.kind == "restore"))
    assert kept(world.engine) == counted_directly(world.engine)
    assert unfolded(world.engine) > 0
    planner.plan(world.engine, world.settings)  # a plan folds what changed
    assert unfolded(world.engine) == 0
    assert kept(world.engine) == counted_directly(world.engine)


def unfolded(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(schema.store_count_changes)
        ).scalar_one()
