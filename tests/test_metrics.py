"""`etl status --format prometheus`, read back with prometheus_client's own parser."""

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etl import __version__
from etl.db import SCHEMA_REVISION
from etl.sandbox import Sandbox
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
