"""Where `etl telemetry collect` takes readings from: a source, named by ETL_TELEMETRY_SOURCE as
`NAME:ARGUMENT`. The built-in `csv_folder:/path` reads the files dropped in a folder; a plug-in
is an installed `etl.telemetry_sources` entry point (a Modbus meter, a BMS trend log).

A source is a callable `source(argument, queue)`. It calls `queue(name, records)` for each batch
(records: lines of CSV or JSON, or dicts of the same fields, as etl.ingest.readings takes them);
`queue` returns once the batch is in the outbox, and only then may the source let the batch go
(delete a file, advance a cursor). A source that dies between the two offers the batch again
next time, and a reading queued twice is one.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from etl.base.errors import ConfigError, EtlError
from etl.ingest.readings import QueueSummary, queue_lines
from etl.store.vocabulary import OutboxEndpoint

__all__ = ["QUEUED_FOLDER", "Collected", "collect", "csv_folder", "load_source"]

Queue = Callable[[str, Iterable[str | dict[str, Any]]], QueueSummary]
Source = Callable[[str, Queue], None]
QUEUED_FOLDER = "queued"  # where csv_folder moves a file once its readings are in the outbox


@dataclass
class Collected:
    batches: list[tuple[str, QueueSummary]] = field(default_factory=list)


def csv_folder(folder: str, queue: Queue) -> None:
    """Each `*.csv` and `*.jsonl` file of the folder, oldest first, queued, then moved into its
    `queued/` folder."""
    path = Path(folder)
    if not folder or not path.is_dir():
        raise ConfigError(f"csv_folder: {folder!r} is not a folder")
    done = path / QUEUED_FOLDER
    done.mkdir(exist_ok=True)
    files = [f for f in path.iterdir() if f.suffix in (".csv", ".jsonl") and f.is_file()]
    for file in sorted(files, key=lambda f: (f.stat().st_mtime, f.name)):
        with file.open(encoding="utf-8", errors="replace") as lines:
            queue(file.name, lines)
        file.replace(done / file.name)


def load_source(spec: str) -> tuple[str, Source, str]:
    """The source's name, the source, and its argument, from `NAME:ARGUMENT`."""
    name, _, argument = spec.partition(":")
    if name == "csv_folder":
        return name, csv_folder, argument
    found = entry_points(group="etl.telemetry_sources", name=name)
    if not name or not found:
        raise ConfigError(
            f"no telemetry source named {name[:60]!r}",
            "use csv_folder:/path or an installed `etl.telemetry_sources` entry point",
        )
    try:
        return name, next(iter(found)).load(), argument
    except Exception as error:  # a plug-in's import can fail in any way
        raise ConfigError(f"telemetry source {name!r} could not be loaded: {error}") from None


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
        source(argument, queue)
    except EtlError:
        raise
    except Exception as error:  # a plug-in can fail in any way: one line, not a traceback
        raise ConfigError(f"telemetry source {name!r} failed: {error}") from None
    return collected
