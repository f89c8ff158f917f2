"""Where `etl telemetry collect` takes readings from: a source, named by ETL_TELEMETRY_SOURCE as
`NAME:ARGUMENT`. The built-in `csv_folder:/path` reads the files dropped in a folder; a plug-in
is an installed `etl.telemetry_sources` entry point (a Modbus meter, a BMS trend log).

A source is a callable `source(argument, queue)`. It calls `queue(name, records)` for each batch
(records: lines of CSV or JSON, or dicts of the same fields, as etl.ingest.readings takes them);
`queue` returns once the batch is in the outbox, and only then may the source let the batch go
(delete a file, advance a cursor). A source that dies between the two offers the batch again
next time, and a reading queued twice is one. It may return a `Left`: what it did not queue,
which `etl telemetry collect` names (csv_folder's files that wait, those it set aside, and those
it failed to read).
"""

import contextlib
import errno
import io
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from etl.base.errors import ConfigError, EtlError
from etl.base.logs import one_line
from etl.base.plugins import load_entry_point
from etl.base.vocabulary import OutboxEndpoint
from etl.ingest.readings import NotReadings, QueueSummary, queue_lines, read_lines

__all__ = [
    "QUEUED_FOLDER",
    "REJECTED_FOLDER",
    "Collected",
    "Left",
    "collect",
    "csv_folder",
    "load_source",
]

QUEUED_FOLDER = "queued"  # where csv_folder moves a file once its readings are in the outbox
REJECTED_FOLDER = "rejected"  # where it moves a file that is no readings, with NAME.reason
# a writer's `x.csv.tmp` or `x.csv.part` (or dot-file) is not taken until renamed
SUFFIXES = (".csv", ".jsonl")
SETTLE_SECONDS = 5  # a file changed more recently may be written still: it waits
# a file whose last line has had no line break this long will never have one ("\n".join(rows))
QUIET_SECONDS = 600


@dataclass
class Left:
    """What a source did not queue, each `(name, why)`: what waits for next time, what it set
    aside as no readings (which an operator must hear of), and what it failed to read now (an
    I/O error: tried again next time, but a collection that fails)."""

    waiting: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Collected:
    batches: list[tuple[str, QueueSummary]] = field(default_factory=list)
    left: Left = field(default_factory=Left)


Queue = Callable[[str, Iterable[str | dict[str, Any]]], QueueSummary]
Source = Callable[[str, Queue], Left | None]


def csv_folder(folder: str, queue: Queue) -> Left:
    """Each `*.csv` and `*.jsonl` file of the folder, oldest first, queued, then moved into its
    `queued/` folder. A file that may be written still (changed in the last SETTLE_SECONDS, or
    its last line without a line break) waits, untouched; one that is no readings (a CSV header
    without the columns needed, a link, a folder) or would wait for ever (its last line without
    a line break for QUIET_SECONDS, its modification time in the future) is moved into
    `rejected/`, with its reason in `NAME.reason` beside it; one that cannot be read now (an I/O
    error) stays for next time; and the others go on."""
    path = Path(folder)
    if not folder or not path.is_dir():
        raise ConfigError(f"csv_folder: {folder!r} is not a folder")
    for name in (QUEUED_FOLDER, REJECTED_FOLDER):
        (path / name).mkdir(exist_ok=True)
    left = Left()
    for file, mode in _files(path):
        name = _printable(file.name)
        try:
            why = _queue_file(file, mode, name, queue)
        except FileNotFoundError:  # another collector took it
            continue
        except OSError as error:  # EIO, ESTALE, EMFILE, EACCES: a good file, readable later
            reason = error.strerror or str(error)
            left.failed.append((name, f"unreadable now: {reason}; tried again next time"))
            continue
        except NotReadings as error:
            reason = str(error)
            moved = _set_aside(file, path / REJECTED_FOLDER, reason)
            if moved:
                where = _printable(f"{REJECTED_FOLDER}/{moved.name}")
                left.rejected.append((name, f"{reason} (moved to {where})"))
            continue
        if why:
            left.waiting.append((name, why))
            continue
        with contextlib.suppress(FileNotFoundError):  # another collector moved it first
            file.replace(path / QUEUED_FOLDER / file.name)
    return left


def _files(folder: Path) -> list[tuple[Path, int]]:
    """The folder's `*.csv` and `*.jsonl` entries but dot-files, oldest first, each with its
    mode (of a link, not of what it points to)."""
    found = []
    for file in folder.iterdir():
        if file.name.startswith(".") or file.suffix not in SUFFIXES:
            continue
        with contextlib.suppress(FileNotFoundError):  # another collector took it
            found.append((file.lstat(), file))
    found.sort(key=lambda entry: (entry[0].st_mtime, entry[1].name))
    return [(file, info.st_mode) for info, file in found]


def _queue_file(file: Path, mode: int, name: str, queue: Queue) -> str | None:
    """Queue the file's readings as they were when found complete: None once they are in the
    outbox, else why the file waits. NotReadings if it is none, or would wait for ever."""
    if not stat.S_ISREG(mode):
        raise NotReadings(
            "a symbolic link, not a file" if stat.S_ISLNK(mode) else "not a regular file"
        )
    # neither a link nor a pipe put in its place since: a pipe's reader would wait forever
    with open(file, "rb", buffering=0, opener=_open_no_link) as handle:
        found = os.fstat(handle.fileno())
        if not stat.S_ISREG(found.st_mode):
            raise NotReadings("not a regular file")
        age = time.time() - found.st_mtime
        if age < -SETTLE_SECONDS:  # it would wait until the writer's clock is right
            raise NotReadings(
                f"its modification time is {-age:.0f} s in the future: is the writer's clock "
                "right? move it back once it is"
            )
        if age < SETTLE_SECONDS:
            return f"changed in the last {SETTLE_SECONDS} s: it may be written still"
        if found.st_size and os.pread(handle.fileno(), 1, found.st_size - 1) not in (b"\n", b"\r"):
            if age >= QUIET_SECONDS:
                raise NotReadings(
                    f"its last line has had no line break for {QUIET_SECONDS // 60} minutes: if "
                    "the file is complete, add one and move it back"
                )
            return "its last line has no line break yet: it may be written still"
        lines = _WholeLines(handle, found.st_size)
        queue(name, lines)
    if lines.cut or _identity(file.lstat()) != _identity(found):
        return "it changed while it was read: read again next time"
    return None


def _open_no_link(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW's answer: made a link since it was found
            raise NotReadings("a symbolic link, not a file") from None
        raise


class _WholeLines:
    """The lines of a file's first `size` bytes (what was found complete), but a last line
    without its line break: the file was cut and written again since, and that line may be a
    reading half written (12 of 123.45 kW). `cut` says one was held back."""

    def __init__(self, file: io.FileIO, size: int) -> None:
        self.prefix, self.cut = _Prefix(file, size), False

    def __iter__(self) -> Iterator[str]:
        text = io.TextIOWrapper(io.BufferedReader(self.prefix), encoding="utf-8", errors="replace")
        held: str | None = None
        for line in read_lines(text):
            if held is not None:
                yield held
            held = line
        if held is None:
            return
        # by the last byte read, not by `held`: read_lines cuts a line too long (to be set aside)
        # and skips the rest of it, line break included
        if self.prefix.last in (b"\n", b"\r"):
            yield held
        else:
            self.cut = True


class _Prefix(io.RawIOBase):
    """A file's first `size` bytes: what was found complete, not a line half written since.
    `last` is the last byte read."""

    def __init__(self, file: io.FileIO, size: int) -> None:
        self.file, self.left, self.last = file, size, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.file.read(min(len(buffer), self.left)) or b""
        buffer[: len(data)] = data
        self.left -= len(data)
        if data:
            self.last = data[-1:]
        return len(data)


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _set_aside(file: Path, folder: Path, reason: str) -> Path | None:
    """Move the file into `folder`, under a name no other file there has, with its reason in
    NAME.reason: where it is now, or None if it is gone (another collector set it aside)."""
    target, copies = folder / file.name, 0
    while os.path.lexists(target):
        copies += 1
        target = folder / f"{file.name}.{copies}"
    try:
        file.replace(target)
    except FileNotFoundError:
        return None
    target.with_name(f"{target.name}.reason").write_text(f"{reason}\n", encoding="utf-8")
    return target


def _printable(name: str) -> str:
    """A file's name fit for a line and the store: its bytes that are not UTF-8 and its control
    characters escaped."""
    return one_line(os.fsencode(name).decode("utf-8", errors="backslashreplace"))


def load_source(spec: str) -> tuple[str, Source, str]:
    """The source's name, the source, and its argument, from `NAME:ARGUMENT`."""
    name, _, argument = spec.partition(":")
    if name == "csv_folder":
        return name, csv_folder, argument
    return (
        name,
        load_entry_point("etl.telemetry_sources", name, "telemetry source", "csv_folder:/path"),
        argument,
    )


def collect(
    engine: Engine, spec: str, endpoint: OutboxEndpoint = OutboxEndpoint.TELEMETRY
) -> Collected:
    """Queue every batch the source offers. A source that fails is one error; the batches it
    queued before stay queued."""
    name, source, argument = load_source(spec)
    collected = Collected()

    def queue(batch: str, records: Iterable[str | dict[str, Any]]) -> QueueSummary:
        summary = queue_lines(engine, records, f"{name}:{batch}", endpoint)
        collected.batches.append((batch, summary))
        return summary

    try:
        left = source(argument, queue)
    except EtlError:
        raise
    except Exception as error:  # a plug-in can fail in any way: one line, not a traceback
        raise ConfigError(f"telemetry source {name!r} failed: {error}") from None
    if isinstance(left, Left):  # a plug-in may return nothing, or anything
        collected.left = left
    return collected
