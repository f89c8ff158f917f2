"""`etl status --format prometheus`, read back with prometheus_client's own parser."""

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from etl import __version__
from etl.read import metrics, status
from etl.sandbox.emulator import Sandbox
from etl.store.db import SCHEMA_REVISION, make_engine
from etl.store.migrate import migrate
from tests.helpers import at, dispatch, site
from tests.processes import InProcess, in_process


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

    assert result.returncode == 0, result.stderr  # a failed attempt is retried: still OK
    found = samples(result.stdout)
    assert found[("etl_info", (("schema", SCHEMA_REVISION), ("version", __version__)))] == 1
    assert found[("etl_status", ())] == 0
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


def test_the_counts_read_indexes_not_every_action_ever_taken(tmp_path: Path) -> None:
    """Status and metrics run every minute over years of history: at 8 million actions their
    counts took 0.65 s and 1.5 s while they read the actions table itself. Now the status check
    only seeks, and the metrics' count by state reads an index of (state, finished_at), smaller
    than the table (SQLite's plans; PostgreSQL has the same indexes and picks by size)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'etl.db'}")
    migrate(engine)

    def plans_of(call: Callable[[], object]) -> list[str]:
        statements: list[tuple[str, Any]] = []

        def keep(_conn: Any, _cur: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
            if "actions" in sql or "action_attempts" in sql:
                statements.append((sql, params))

        event.listen(engine, "before_cursor_execute", keep)
        call()
        event.remove(engine, "before_cursor_execute", keep)
        with engine.connect() as conn:
            return [
                step[-1]
                for sql, params in statements
                for step in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            ]

    checked = plans_of(lambda: status.check(engine, timedelta(minutes=10), timedelta(hours=24)))
    assert checked and all(step.startswith("SEARCH") for step in checked), checked
    counted = plans_of(lambda: metrics.store_counts(engine))
    assert "SCAN actions USING COVERING INDEX ix_actions_state_finished_at" in counted, counted
    assert "SCAN action_attempts USING INDEX ix_action_attempts_failed" in counted, counted
    assert not [step for step in counted if step.startswith("SCAN") and "INDEX" not in step]
