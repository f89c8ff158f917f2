"""Telemetry sources: the built-in csv_folder and an `etl.telemetry_sources` plug-in, feeding the
outbox a batch at a time (tests/store/test_outbox.py has the readings' checks and sending)."""

import errno
import os
import re
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select

from etl.base.errors import ConfigError
from etl.ingest import readings, sources
from etl.ingest.readings import QueueSummary
from etl.sandbox.emulator import Sandbox
from etl.store import schema
from tests.processes import PLUGIN_DIR, InProcess, install_entry_point
from tests.store.test_outbox import csv, ends, store  # noqa: F401 (a fixture)

T = TypeVar("T")
HEADER = "site_id,meter_id,timestamp,kw\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder for csv_folder (tmp_path holds the store's SQLite file too)."""
    path = tmp_path / "drop"
    path.mkdir()
    return path


def queued(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.telemetry_outbox)).scalar_one()


def drop(folder: Path, name: str, text: str | bytes, age: float = 60) -> Path:
    """A file written whole `age` seconds ago (a file changed in the last seconds waits)."""
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def values(engine: Engine) -> list[float]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.telemetry_outbox.c.value).order_by("id")).scalars())


def test_a_folders_files_are_queued_once_each_and_moved_aside(
    store: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    t = ends(3)
    drop(tmp_path, "a.csv", "".join(csv(f"one,,{t[0]},1,", f"one,,{t[1]},2,", "zzz,,x,1,")), 90)
    drop(tmp_path, "b.jsonl", f'{{"site_id": "one", "timestamp": "{t[2]}", "kw": 3}}\n')
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
    drop(folder, "r.csv", "".join(csv(f"asdf,,{t},5,")))
    monkeypatch.setenv("ETL_TELEMETRY_SOURCE", f"csv_folder:{folder}")
    result = cli("telemetry", "collect")
    assert result.returncode == 0, result.stderr
    assert "telemetry sent: 1 readings in 1 requests" in result.stderr
    assert ("telemetry", "asdf-m1", t, 30, "kW") in sandbox.received
    missing = cli("telemetry", "collect", "--source", "nowhere:x")
    assert missing.returncode == 2 and "no telemetry source named 'nowhere'" in missing.stderr


def test_a_file_still_written_waits_untouched_and_is_named(
    store: Engine,  # noqa: F811
    folder: Path,
) -> None:
    t = ends(4)
    cut = drop(folder, "cut.csv", f"{HEADER}one,,{t[0]},12")  # its writer is mid-number
    fresh = drop(folder, "fresh.csv", f"{HEADER}one,,{t[1]},7\n", age=0)
    drop(folder, ".hidden.csv", f"{HEADER}one,,{t[2]},8\n")  # a writer's names for a file
    drop(folder, "whole.csv.part", f"{HEADER}one,,{t[3]},9\n")  # it has not finished
    drop(folder, "whole.csv.tmp", f"{HEADER}one,,{t[3]},9\n")  # nor this one
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert collected.batches == [] and queued(store) == 0
    assert [name for name, _ in collected.left.waiting] == ["cut.csv", "fresh.csv"]
    assert "no line break" in collected.left.waiting[0][1]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        ".hidden.csv",
        "cut.csv",
        "fresh.csv",
        "whole.csv.part",
        "whole.csv.tmp",
    ]
    drop(folder, "cut.csv", f"{HEADER}one,,{t[0]},123.45\n", age=20)  # the writers finish
    os.utime(fresh, (time.time() - 10, time.time() - 10))
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert [(name, s.queued) for name, s in collected.batches] == [("cut.csv", 1), ("fresh.csv", 1)]
    assert values(store) == [123.45, 7] and collected.left.waiting == []
    assert not cut.exists() and (folder / ".hidden.csv").exists()


@pytest.mark.parametrize("rewritten", [False, True], ids=["appended", "rewritten"])
def test_a_file_written_while_it_is_read_queues_no_cut_reading_and_is_read_next_time(
    store: Engine,  # noqa: F811
    folder: Path,
    rewritten: bool,
) -> None:
    """Its writer resumes after it was found complete, before its lines are read: it appends a
    line cut mid-number, or (an exporter overwriting it in place) writes it again up to there.
    `...,12`, completed later as 123.45, must never be queued as 12 kW."""
    t = ends(2)
    whole = f"{HEADER}one,,{t[0]},1\none,,{t[1]},123.45\n"
    file = drop(folder, "latest.csv", f"{HEADER}one,,{t[0]},1\n")

    def queue(name: str, lines: Iterable[str | dict[str, Any]]) -> QueueSummary:
        with file.open("w" if rewritten else "a") as writer:
            writer.write(f"{HEADER}one,,{t[0]},1\n" if rewritten else "")
            writer.write(f"one,,{t[1]},12")
        return readings.queue_lines(store, lines, name)

    left = sources.csv_folder(str(folder), queue)
    assert values(store) == [1] and file.exists()
    assert left.waiting == [("latest.csv", "it changed while it was read: read again next time")]
    drop(folder, "latest.csv", whole)
    sources.collect(store, f"csv_folder:{folder}")
    assert values(store) == [1, 123.45] and not file.exists()


def test_a_file_that_would_wait_for_ever_is_set_aside_saying_why(
    store: Engine,  # noqa: F811
    folder: Path,
) -> None:
    t = ends(3)
    joined = f"{HEADER}one,,{t[0]},1\none,,{t[1]},2"  # "\n".join(rows): no last line break
    drop(folder, "joined.csv", joined, age=sources.QUIET_SECONDS + 1)
    drop(folder, "ahead.csv", f"{HEADER}one,,{t[2]},3\n", age=-3600)  # a writer's clock ahead
    drop(folder, "soon.csv", f"{HEADER}one,,{t[2]},3\n", age=-2)  # a little: it passes soon
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert collected.batches == [] and queued(store) == 0
    assert [name for name, _ in collected.left.waiting] == ["soon.csv"]
    rejected = dict(collected.left.rejected)
    assert rejected["joined.csv"] == (
        "its last line has had no line break for 10 minutes: if the file is complete, add one "
        "and move it back (moved to rejected/joined.csv)"
    )
    assert re.fullmatch(
        r"its modification time is 3(599|600) s in the future: is the writer's clock right\? "
        r"move it back once it is \(moved to rejected/ahead.csv\)",
        rejected["ahead.csv"],
    )
    assert (folder / "rejected" / "joined.csv").read_text() == joined
    assert (folder / "soon.csv").exists()


def unreadable_now(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Reading the file `name` fails as a disk or a share can, for a while (EIO)."""
    open_no_link = sources._open_no_link

    def opener(path: str, flags: int) -> int:
        if Path(path).name == name:
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return open_no_link(path, flags)

    monkeypatch.setattr(sources, "_open_no_link", opener)


def test_a_file_unreadable_now_stays_to_be_read_next_time_and_a_link_is_set_aside(
    store: Engine,  # noqa: F811
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = ends(2)
    drop(folder, "flaky.csv", f"{HEADER}one,,{t[0]},1\n", age=90)
    swapped = drop(folder, "swapped.csv", f"{HEADER}one,,{t[1]},2\n")
    elsewhere = drop(folder, "elsewhere.txt", f"{HEADER}one,,{t[1]},2\n")
    open_no_link = sources._open_no_link

    def opener(path: str, flags: int) -> int:
        if Path(path).name == "swapped.csv":  # made a link since it was found
            swapped.unlink()
            swapped.symlink_to(elsewhere)
        return open_no_link(path, flags)

    with monkeypatch.context() as patch:
        patch.setattr(sources, "_open_no_link", opener)
        unreadable_now(patch, "flaky.csv")
        collected = sources.collect(store, f"csv_folder:{folder}")
    assert collected.batches == [] and queued(store) == 0
    assert collected.left.failed == [
        ("flaky.csv", "unreadable now: Input/output error; tried again next time")
    ]
    assert collected.left.rejected == [
        ("swapped.csv", "a symbolic link, not a file (moved to rejected/swapped.csv)")
    ]
    assert (folder / "flaky.csv").exists() and (folder / "rejected" / "swapped.csv").is_symlink()
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert [(name, s.queued) for name, s in collected.batches] == [("flaky.csv", 1)]
    assert collected.left.failed == [] and values(store) == [1]


def test_a_file_that_is_not_readings_is_set_aside_and_the_rest_go_on(
    store: Engine,  # noqa: F811
    folder: Path,
) -> None:
    t = ends(2)
    drop(folder, "bad.csv", "meter,timestamp,kw\na,b,c\n", age=90)
    drop(folder, "good.csv", f"{HEADER}one,,{t[0]},1\n", age=60)
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert [(name, s.queued) for name, s in collected.batches] == [("good.csv", 1)]
    assert collected.left.rejected == [
        ("bad.csv", "line 1: the CSV header lacks site_id (moved to rejected/bad.csv)")
    ]
    rejected = folder / "rejected"
    assert (rejected / "bad.csv").read_text() == "meter,timestamp,kw\na,b,c\n"
    assert (rejected / "bad.csv.reason").read_text() == "line 1: the CSV header lacks site_id\n"
    assert (folder / "queued" / "good.csv").exists()
    drop(folder, "bad.csv", "kw\n")  # the same name again never replaces the first
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert [why for _, why in collected.left.rejected] == [
        "line 1: the CSV header lacks site_id, timestamp (moved to rejected/bad.csv.1)"
    ]
    assert (rejected / "bad.csv.1").read_text() == "kw\n"
    assert "lacks site_id, timestamp" in (rejected / "bad.csv.1.reason").read_text()
    assert (rejected / "bad.csv").read_text() == "meter,timestamp,kw\na,b,c\n"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_order_mark_is_accepted(
    store: Engine,  # noqa: F811
    folder: Path,
    suffix: str,
) -> None:
    (t,) = ends(1)
    text = (
        f"{HEADER}one,,{t},5\n"
        if suffix == ".csv"
        else f'{{"site_id": "one", "timestamp": "{t}", "kw": 5}}\n'
    )
    drop(folder, f"excel{suffix}", text.encode("utf-8-sig"))
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert [(name, s.queued, s.rejected) for name, s in collected.batches] == [
        (f"excel{suffix}", 1, 0)
    ]


def test_etl_telemetry_send_accepts_a_byte_order_mark(
    cli: InProcess, sandbox: Sandbox, tmp_path: Path
) -> None:
    cli.ok("fetch", "--sites")
    (t,) = ends(1)
    path = tmp_path / "excel.csv"
    path.write_text(f"{HEADER}asdf,,{t},5\n", encoding="utf-8-sig")
    result = cli("telemetry", "send", str(path))
    assert result.returncode == 0, result.stderr
    assert ("telemetry", "asdf-m1", t, 30, "kW") in sandbox.received


def test_etl_telemetry_send_reads_a_huge_line_in_little_memory(
    cli: InProcess, sandbox: Sandbox, tmp_path: Path
) -> None:
    cli.ok("fetch", "--sites")
    (t,) = ends(1)
    path = tmp_path / "huge.csv"
    path.write_text(f"{HEADER}{'9' * 30_000_000}\nasdf,,{t},5\n")
    result, peak = with_peak_memory(lambda: cli("telemetry", "send", str(path)))
    assert result.returncode == 0, result.stderr
    assert "2 lines, 1 new, 0 corrected, 0 already queued; 1 set aside" in result.stderr
    assert peak < 3_000_000  # a tenth of the line


def with_peak_memory(call: Callable[[], T]) -> tuple[T, int]:
    """What the call returns, and the most memory Python held for it at once."""
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_hostile_entries_neither_stop_the_collection_nor_lose_readings(
    store: Engine,  # noqa: F811
    folder: Path,
) -> None:
    t = ends(3)
    elsewhere = drop(folder, "elsewhere.txt", f"{HEADER}one,,{t[0]},1\n")
    (folder / "link.csv").symlink_to(elsewhere)  # a link reads what its target is
    (folder / "folder.csv").mkdir()
    os.mkfifo(folder / "pipe.csv")  # reading it would wait forever
    drop(folder, "empty.csv", "")
    drop(folder, "header.csv", HEADER)
    control = "a\x1b[31m\nb\udcff.csv"  # a terminal's escape, a line break, bytes not UTF-8
    drop(folder, control, f"{HEADER}one,,{t[1]},3\nzzz,,{t[2]},4\n")
    collected = sources.collect(store, f"csv_folder:{folder}")
    assert values(store) == [3]
    assert sorted(name for name, _ in collected.left.rejected) == [
        "folder.csv",
        "link.csv",
        "pipe.csv",
    ]
    assert all(name.isprintable() for name, _ in collected.batches + collected.left.rejected)
    with store.connect() as conn:
        sources_kept = (
            conn.execute(select(schema.telemetry_outbox_rejected.c.source)).scalars().all()
        )
    assert sources_kept == ["csv_folder:a\\x1b[31m\\x0ab\\xff.csv"]
    assert sorted(p.name for p in (folder / "queued").iterdir()) == sorted(
        ["empty.csv", "header.csv", control]
    )
    assert elsewhere.exists() and (folder / "rejected" / "link.csv").is_symlink()


def test_a_huge_line_is_set_aside_in_little_memory(
    store: Engine,  # noqa: F811
    folder: Path,
) -> None:
    (t,) = ends(1)
    # the last line too long, whole: it comes cut, without its line break, yet was no cut reading
    drop(folder, "huge.csv", f"{HEADER}{'9' * 30_000_000}\none,,{t},2\n{'8' * 20_000}\n")
    collected, peak = with_peak_memory(lambda: sources.collect(store, f"csv_folder:{folder}"))
    assert [(name, s.queued, s.rejected) for name, s in collected.batches] == [("huge.csv", 1, 2)]
    assert collected.left.waiting == [] and (folder / "queued" / "huge.csv").exists()
    assert peak < 3_000_000  # a tenth of the line


def test_a_file_another_collector_takes_is_left_to_it(
    store: Engine,  # noqa: F811
    folder: Path,
) -> None:
    t = ends(2)
    first = drop(folder, "first.csv", f"{HEADER}one,,{t[0]},1\n", age=90)
    second = drop(folder, "second.csv", f"{HEADER}one,,{t[1]},2\n")
    (folder / "queued").mkdir()

    def queue(name: str, lines: Iterable[str | dict[str, Any]]) -> QueueSummary:
        for file in (first, second):  # the other collector queues both while this one reads
            file.replace(folder / "queued" / file.name)
        return readings.queue_lines(store, lines, name)

    left = sources.csv_folder(str(folder), queue)
    assert left.waiting == [] and left.rejected == [] and values(store) == [1]
    assert sorted(p.name for p in (folder / "queued").iterdir()) == ["first.csv", "second.csv"]


def test_etl_telemetry_collect_names_what_waits_and_what_it_set_aside(
    cli: InProcess, sandbox: Sandbox, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.ok("fetch", "--sites")
    (t,) = ends(1)
    drop(folder, "bad.csv", "meter,timestamp,kw\n", age=90)
    drop(folder, "good.csv", f"{HEADER}asdf,,{t},5\n")
    drop(folder, "late.csv", f"{HEADER}asdf,,{t},5")
    drop(folder, "flaky.csv", f"{HEADER}asdf,,{t},5\n")
    unreadable_now(monkeypatch, "flaky.csv")
    monkeypatch.setenv("ETL_TELEMETRY_SOURCE", f"csv_folder:{folder}")
    result = cli("telemetry", "collect")
    assert result.returncode == 2  # what an operator must see to wins over a failure
    assert "Traceback" not in result.stderr
    assert "telemetry sent: 1 readings in 1 requests" in result.stderr
    assert "bad.csv" in result.stderr and "the CSV header lacks site_id" in result.stderr
    assert "late.csv waits" in result.stderr
    assert "flaky.csv failed: unreadable now" in result.stderr
    assert ("telemetry", "asdf-m1", t, 30, "kW") in sandbox.received


def test_etl_telemetry_collect_fails_while_a_file_is_unreadable(
    cli: InProcess, sandbox: Sandbox, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.ok("fetch", "--sites")
    t = ends(2)
    drop(folder, "flaky.csv", f"{HEADER}asdf,,{t[0]},5\n", age=90)
    drop(folder, "good.csv", f"{HEADER}asdf,,{t[1]},6\n")
    unreadable_now(monkeypatch, "flaky.csv")
    monkeypatch.setenv("ETL_TELEMETRY_SOURCE", f"csv_folder:{folder}")
    result = cli("telemetry", "collect")
    assert result.returncode == 1, result.stderr
    assert (
        "telemetry from flaky.csv failed: unreadable now: Input/output error; tried again next "
        "time" in result.stderr
    )
    assert "telemetry sent: 1 readings in 1 requests" in result.stderr
    assert (folder / "flaky.csv").exists() and not (folder / "rejected" / "flaky.csv").exists()
