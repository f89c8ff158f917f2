"""Readings to send to Voltus, from lines of CSV or JSON into the outbox (etl.store.outbox).

Each line (or dict, from a source plug-in: etl.ingest.sources) is one reading: `site_id`,
`meter_id` (empty: the site's only meter, whose id is sent), `timestamp` (the END of the
interval, RFC 3339), `kw` (or `kwh`, a battery's state of charge) and optionally
`interval_seconds` (30 unless given). CSV has a header line; JSON lines are objects. A reading is
checked before it is queued: a known site and meter (GET /sites lists them: `etl fetch
--sites`), an interval the API takes (a multiple of 30 seconds up to 300), a timestamp on the
interval's boundary and not in the future, a finite value within a site's physical bounds. A
line that fails is set aside with why; the others are queued. A byte-order mark (what Excel
writes) before the first line is no part of it.
"""

import csv
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Engine

from etl.base.errors import ConfigError
from etl.base.logs import one_line
from etl.base.timeutil import parse_rfc3339, utcnow
from etl.base.vocabulary import OutboxEndpoint, ReadingUnits
from etl.source.records import MAX_KW, MIN_READING_KW
from etl.store import outbox
from etl.store.db import read_transaction, write_transaction
from etl.store.outbox import Meters, Queued, QueuedCounts, RejectedLine

__all__ = ["NotReadings", "QueueSummary", "check", "queue_lines", "read_lines"]

DEFAULT_INTERVAL = 30
MOST_LINE_CHARS = 10_000  # a longer line is no reading
LINES_PER_WRITE = 1000  # lines checked, then queued in one transaction: memory stays flat
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class NotReadings(ConfigError):
    """The lines as a whole are no readings (a CSV header without the columns needed)."""


@dataclass
class QueueSummary:
    lines: int = 0  # readings read (blank lines and the header aside)
    queued: int = 0
    corrected: int = 0
    unchanged: int = 0
    rejected: int = 0  # lines set aside by this call
    rejected_before: int = 0  # of those, set aside before already (a file sent again)


def queue_lines(
    engine: Engine,
    lines: Iterable[str | dict[str, Any]],
    source: str,
    endpoint: OutboxEndpoint = OutboxEndpoint.TELEMETRY,
    now: datetime | None = None,
) -> QueueSummary:
    """Check each reading and queue those that pass; `source` names where the lines came from
    (a file, `-`) in the record of those set aside."""
    now = now or utcnow()
    with read_transaction(engine) as conn:
        meters = outbox.site_meters(conn)
    summary = QueueSummary()
    readings: list[Queued] = []
    rejected: list[RejectedLine] = []
    for number, line, fields in _records(lines):
        summary.lines += 1
        try:
            if isinstance(fields, str):
                raise ValueError(fields)
            readings.append(check(fields, endpoint, meters, now))
        except ValueError as error:
            rejected.append(RejectedLine(source, number, one_line(line), str(error)))
        if len(readings) + len(rejected) >= LINES_PER_WRITE:
            _write(engine, readings, rejected, now, summary)
            readings, rejected = [], []
    _write(engine, readings, rejected, now, summary)
    return summary


def read_lines(text: TextIO) -> Iterator[str]:
    """The text's lines, each read with a bounded memory: a line too long to be a reading comes
    cut (still too long, so set aside) and the rest of it is skipped."""
    most = MOST_LINE_CHARS + 2  # a reading's line and its line break
    while line := text.readline(most):
        yield line
        while line and not line.endswith(("\n", "\r")):
            line = text.readline(most)


def _write(
    engine: Engine,
    readings: list[Queued],
    rejected: list[RejectedLine],
    now: datetime,
    summary: QueueSummary,
) -> None:
    with write_transaction(engine) as conn:
        counts = outbox.enqueue(conn, readings, now) if readings else QueuedCounts()
        new_rejected = outbox.set_aside(conn, rejected, now)
    summary.queued += counts.queued
    summary.corrected += counts.corrected
    summary.unchanged += counts.unchanged
    summary.rejected += len(rejected)
    summary.rejected_before += len(rejected) - new_rejected


def _records(
    lines: Iterable[str | dict[str, Any]],
) -> Iterator[tuple[int, str, dict[str, Any] | str]]:
    """(line number, line, its fields or why it has none), CSV or JSON lines by the first line
    that is not blank; a dict (from a source plug-in) is a record already."""
    header: list[str] | None = None
    json_lines: bool | None = None
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, dict):
            yield number, json.dumps(raw, default=str)[:MOST_LINE_CHARS], raw
            continue
        if number == 1:  # Excel begins a file with a byte-order mark
            raw = raw.removeprefix("\ufeff")
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if len(line) > MOST_LINE_CHARS:
            yield number, line[:MOST_LINE_CHARS], f"a line of over {MOST_LINE_CHARS} characters"
            continue
        if json_lines is None:
            json_lines = line.lstrip().startswith("{")
        if json_lines:
            yield number, line, _json_fields(line)
            continue
        try:
            cells = next(csv.reader([line], strict=True))
        except csv.Error as error:
            yield number, line, f"not a CSV line: {error}"
            continue
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            missing = sorted({"site_id", "timestamp"} - set(header))
            if not {"kw", "kwh"} & set(header):
                missing.append("kw (or kwh)")
            if missing:
                raise NotReadings(f"line {number}: the CSV header lacks {', '.join(missing)}")
            continue
        if len(cells) != len(header):
            yield number, line, f"{len(cells)} cells where the header has {len(header)}"
            continue
        yield number, line, dict(zip(header, cells, strict=True))


def _json_fields(line: str) -> dict[str, Any] | str:
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError):
        return "not a JSON line"
    return fields if isinstance(fields, dict) else "not a JSON object"


def check(
    fields: dict[str, Any], endpoint: OutboxEndpoint, meters: Meters, now: datetime
) -> Queued:
    """The reading, or ValueError saying why it cannot be sent."""
    site_id = _text(fields, "site_id")
    meter_id = _text(fields, "meter_id", required=False)
    if site_id not in meters:
        raise ValueError(f"unknown site {site_id!r} (etl fetch --sites lists them)")
    interval = _interval(fields.get("interval_seconds"))
    end = _timestamp(fields.get("timestamp"), interval, now)
    units, value = _measure(fields)
    if endpoint == OutboxEndpoint.CONTROLLABLE_LOAD:
        if meter_id:
            raise ValueError("controllable load is a site's: leave meter_id out")
        if units != ReadingUnits.KW:
            raise ValueError("controllable load is in kW")
        return Queued(endpoint, site_id, "", end, interval, units, value)
    known = meters[site_id]
    if known is None:
        raise ValueError(f"the meters of site {site_id!r} are unknown: run etl fetch --sites")
    if not meter_id and len(known) != 1:
        raise ValueError(f"site {site_id!r} has {len(known)} meters: name one in meter_id")
    meter = known[0] if not meter_id else next((m for m in known if m["id"] == meter_id), None)
    if meter is None:
        raise ValueError(f"site {site_id!r} has no meter {meter_id!r}")
    if units == ReadingUnits.KWH and meter.get("asset_type") != "battery":
        raise ValueError("kWh is a battery's state of charge: this meter is not a battery")
    # by its meter, named or the site's only one: a reading given once by site and once by
    # meter is one reading, not two points of two identifiers at Voltus
    return Queued(endpoint, site_id, meter["id"], end, interval, units, value)


def _text(fields: dict[str, Any], name: str, required: bool = True) -> str:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise ValueError(f"no {name}")
        return ""
    if not isinstance(value, str) or len(value) > 200:
        raise ValueError(f"{name} is not an id")
    return value.strip()


def _interval(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_INTERVAL
    seconds = _number(value, "interval_seconds")
    if seconds != int(seconds) or not 30 <= seconds <= 300 or seconds % 30:
        raise ValueError(f"interval_seconds must be 30, 60, ... or 300 (the API's), not {value}")
    return int(seconds)


def _timestamp(value: Any, interval: int, now: datetime) -> datetime:
    try:
        end = parse_rfc3339(value)
    except ValueError as error:
        raise ValueError(f"timestamp: {error}") from None
    if end.microsecond or int(end.timestamp()) % interval:
        raise ValueError(f"timestamp {value} is not the end of a {interval}-second interval")
    if end > now:
        raise ValueError(f"timestamp {value} is in the future: an interval is sent once it ended")
    return end


def _measure(fields: dict[str, Any]) -> tuple[ReadingUnits, float]:
    given = [
        (units, fields.get(name))
        for units, name in ((ReadingUnits.KW, "kw"), (ReadingUnits.KWH, "kwh"))
        if fields.get(name) not in (None, "")
    ]
    if len(given) != 1:
        raise ValueError("give one of kw and kwh")
    ((units, raw),) = given
    name = str(units).lower()
    value = _number(raw, name)
    if not -MAX_KW <= value <= MAX_KW:
        raise ValueError(f"{name} {value:g} is beyond any site's (±{MAX_KW:,.0f})")
    if 0 < abs(value) < MIN_READING_KW:
        raise ValueError(f"{name} {value:g} is under any meter's resolution")
    if units == ReadingUnits.KWH and value < 0:
        raise ValueError("a state of charge is not negative")
    return units, value


def _number(value: Any, name: str) -> float:
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is not a number: {str(value)[:40]!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} is not finite")
    return float(value)
