"""Rows written for people (an aligned table) or machines (CSV, JSON, JSON lines), as they come:
nothing waits for the whole result but the table's first rows, which set its column widths."""

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import chain, islice
from typing import Any, TextIO

from etl.base.logs import one_line
from etl.base.timeutil import TimeShift, jsonable

__all__ = ["FORMATS", "chosen_columns", "shift_times", "write"]

FORMATS = ("table", "csv", "json", "jsonl")
TABLE_SAMPLE = 200  # rows read before a table's column widths are fixed
TABLE_MAX_WIDTH = 40


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(jsonable(value))


def chosen_columns(spec: str | None, available: list[str]) -> list[str]:
    """The columns `--columns a,b,c` names, in its order (all when not given); a name that is not
    a column, or one given twice, is refused with the list of them."""
    if spec is None:
        return available
    chosen = [name.strip() for name in spec.split(",")]
    for name in chosen:
        if name not in available:
            shown = one_line(name[:40]) or "(an empty name)"
            raise ValueError(f"no column {shown!r}: choose from {', '.join(available)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError("a column is named twice")
    return chosen


def shift_times(
    rows: Iterable[dict[str, Any]],
    shift: TimeShift,
    zone_of: Callable[[dict[str, Any]], str | None],
) -> Iterator[dict[str, Any]]:
    """The rows with every time shifted as `--tz` asks; `zone_of` names a row's program zone."""
    for row in rows:
        zone = zone_of(row)
        yield {k: shift(v, zone) if isinstance(v, datetime) else v for k, v in row.items()}


class _Counted:
    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            self.count += 1
            yield row


def write(rows: Iterable[dict[str, Any]], columns: list[str], out: TextIO, fmt: str) -> int:
    """Write the rows in the format; return how many there were."""
    writers = {"table": _table, "csv": _csv, "json": _json, "jsonl": _jsonl}
    counted = _Counted(rows)
    writers[fmt](iter(counted), columns, out)
    return counted.count


def _csv(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([text(row[c]) for c in columns] for row in rows)


def _json(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    separator = "\n"
    out.write("[")
    for row in rows:
        out.write(separator + json.dumps({c: jsonable(row[c]) for c in columns}))
        separator = ",\n"
    out.write("\n]\n" if separator != "\n" else "]\n")


def _jsonl(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    for row in rows:
        out.write(json.dumps({c: jsonable(row[c]) for c in columns}) + "\n")


def _table(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    """One line per row: a cell's line breaks (a handler's stderr, say) are shown escaped."""
    sample = list(islice(rows, TABLE_SAMPLE))

    def cell(value: Any) -> str:
        return one_line(text(value))

    widths = [
        min(TABLE_MAX_WIDTH, max([len(c)] + [len(cell(r[c])) for r in sample])) for c in columns
    ]

    def line(cells: list[str]) -> str:
        fitted = (
            cell if len(cell) <= width else cell[: width - 1] + "…"
            for cell, width in zip(cells, widths, strict=True)
        )
        return "  ".join(f"{cell:<{width}}" for cell, width in zip(fitted, widths, strict=True))

    out.write(line(columns).rstrip() + "\n")
    if not sample:
        out.write("(no rows)\n")
    for row in chain(sample, rows):
        out.write(line([cell(row[c]) for c in columns]).rstrip() + "\n")
