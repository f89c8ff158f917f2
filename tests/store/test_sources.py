"""Telemetry sources: the built-in csv_folder and an `etl.telemetry_sources` plug-in, feeding the
outbox a batch at a time (tests/store/test_outbox.py has the readings' checks and sending)."""

import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.base.errors import ConfigError
from etl.ingest import sources
from etl.sandbox.emulator import Sandbox
from etl.store import schema
from tests.processes import PLUGIN_DIR, InProcess, install_entry_point
from tests.store.test_outbox import csv, ends, store  # noqa: F401 (a fixture)


def queued(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.telemetry_outbox)).scalar_one()


def test_a_folders_files_are_queued_once_each_and_moved_aside(
    store: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    t = ends(3)
    (tmp_path / "a.csv").write_text("".join(csv(f"one,,{t[0]},1,", f"one,,{t[1]},2,", "zzz,,x,1,")))
    (tmp_path / "b.jsonl").write_text(f'{{"site_id": "one", "timestamp": "{t[2]}", "kw": 3}}\n')
    (tmp_path / "notes.txt").write_text("not readings")
    collected = sources.collect(store, f"csv_folder:{tmp_path}")
    assert [(name, s.queued, s.rejected) for name, s in collected.batches] == [
        ("a.csv", 2, 1),
        ("b.jsonl", 1, 0),
    ]
    assert sorted(p.name for p in (tmp_path / "queued").iterdir()) == ["a.csv", "b.jsonl"]
    assert (tmp_path / "notes.txt").exists() and queued(store) == 3
    with store.connect() as conn:
        (source,) = conn.execute(select(schema.telemetry_outbox_rejected.c.source)).scalars()
    assert source == "csv_folder:a.csv"
    assert sources.collect(store, f"csv_folder:{tmp_path}").batches == []


def install_meter_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`meter` as an installed `etl.telemetry_sources` entry point."""
    install_entry_point(tmp_path / "site", "etl.telemetry_sources", "meter = meter_source:collect")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), str(PLUGIN_DIR), *sys.path])


def test_a_plugin_source_offers_dicts_and_a_failure_keeps_what_it_queued(
    store: Engine,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_meter_source(tmp_path, monkeypatch)
    collected = sources.collect(store, "meter:4")
    assert [(name, s.queued) for name, s in collected.batches] == [("first", 4), ("second", 4)]
    with pytest.raises(ConfigError, match="telemetry source 'meter' failed: the meter stopped"):
        sources.collect(store, "meter:-5")
    # the failing run's first batch is in: its readings overlap the first run's but one
    assert queued(store) == 8 + 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere:x", "no telemetry source named 'nowhere'"),
        ("", "no telemetry source named ''"),
        ("csv_folder:/no/such/folder", "is not a folder"),
    ],
)
def test_a_source_that_cannot_be_used_is_one_error(
    store: Engine,  # noqa: F811
    spec: str,
    message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        sources.collect(store, spec)


def test_etl_telemetry_collect_queues_and_sends(
    cli: InProcess, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.ok("fetch", "--sites")
    folder = tmp_path / "drop"
    folder.mkdir()
    (t,) = ends(1)
    (folder / "r.csv").write_text("".join(csv(f"asdf,,{t},5,")))
    monkeypatch.setenv("ETL_TELEMETRY_SOURCE", f"csv_folder:{folder}")
    result = cli("telemetry", "collect")
    assert result.returncode == 0, result.stderr
    assert "telemetry sent: 1 readings in 1 requests" in result.stderr
    assert ("telemetry", "asdf-m1", t, 30, "kW") in sandbox.received
    missing = cli("telemetry", "collect", "--source", "nowhere:x")
    assert missing.returncode == 2 and "no telemetry source named 'nowhere'" in missing.stderr
