"""Rows written for people (an aligned table), spreadsheets (CSV) or programs (JSON, JSON lines),
as they come: nothing waits for the whole result but the table's first rows, which set its column
widths. A table fits 80 columns: the columns that do not fit are left out, and named on stderr.

A CSV is opened in spreadsheets, and its text comes from the API and the sites' handlers: a text
cell that begins as a formula would (OWASP's list: = + - @ tab, carriage return) is written with
a leading apostrophe, so a spreadsheet shows it as text instead of running it (a program that
wants each text as sent reads JSON). Numbers stay numbers."""

import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from functools import partial
from itertools import chain, islice
from typing import Any, TextIO

from etl.base.logs import one_line
from etl.base.timeutil import TimeShift, jsonable, unshifted, with_offset

__all__ = ["FORMATS", "chosen_columns", "shift_times", "write"]

FORMATS = ("table", "csv", "json", "jsonl")
TABLE_SAMPLE = 200  # rows read before a table's column widths are fixed
TABLE_MAX_WIDTH = 40  # of a column: a longer cell is cut, with an ellipsis
TABLE_WIDTH = 80  # of a line: a terminal's
SEPARATOR = "  "
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# what people need first of a row, whatever the report: when not every column fits, these are
# kept first (after the row's first column, its key), then the others as they fit
NEEDED_FIRST = (
    "dispatch_id",
    "site_id",
    "action",
    "episode",
    "state",
    "outcome",
    "delivered_pct",  # what a performance report is read for
    "start_time",
    "day",
    "month",
    "dispatches",
    "sites",
    "committed_kw",
    "commitment_kw",
    "delivered_kw",
)


def _float_text(value: float) -> str:
    return f"{value:g}"


def _json_text(value: dict[str, Any] | list[Any]) -> str:
    return json.dumps(value, sort_keys=True)


def _time_text(value: datetime) -> str:
    return with_offset(value.isoformat())


# each cell's text by its value's exact type: a report of 300,000 rows has 5 million cells, and
# one lookup beats a chain of isinstance checks; a type not listed takes `_other_text`
TEXT_BY_TYPE: dict[type, Callable[[Any], str]] = {
    str: str,
    int: str,
    float: _float_text,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _: "",
    datetime: _time_text,
    dict: _json_text,
    list: _json_text,
}


def _other_text(value: Any) -> str:
    """A subclass of a type listed (an IntEnum, a StrEnum, an OrderedDict) is spelled as its
    nearest listed base; any other value as JSON has it, as text."""
    for base in type(value).__mro__[1:]:
        if base in TEXT_BY_TYPE:
            return TEXT_BY_TYPE[base](value)
    return str(jsonable(value))


def text(value: Any) -> str:
    return TEXT_BY_TYPE.get(type(value), _other_text)(value)


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
) -> Iterable[dict[str, Any]]:
    """The rows with every time shifted as `--tz` asks; `zone_of` names a row's program zone."""
    if shift is unshifted:  # the rows as they are, not copied: a month's report has 300,000
        return rows
    return (_shifted(row, shift, zone_of(row)) for row in rows)


def _shifted(row: dict[str, Any], shift: TimeShift, zone: str | None) -> dict[str, Any]:
    return {k: shift(v, zone) if isinstance(v, datetime) else v for k, v in row.items()}


class _Counted:
    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            self.count += 1
            yield row


def write(
    rows: Iterable[dict[str, Any]],
    columns: list[str],
    out: TextIO,
    fmt: str,
    notes: TextIO | None = None,
) -> int:
    """Write the rows in the format; return how many there were. A table names the columns it
    left out on `notes` (stderr unless given)."""
    table = partial(_table, notes=notes or sys.stderr)
    writers: dict[str, Callable[[Iterator[dict[str, Any]], list[str], TextIO], None]] = {
        "table": table,
        "csv": _csv,
        "json": _json,
        "jsonl": _jsonl,
    }
    counted = _Counted(rows)
    writers[fmt](iter(counted), columns, out)
    return counted.count


def _csv_text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _csv_cell(value: Any) -> str:
    shown = text(value)
    if isinstance(value, int | float | Decimal) or not shown.startswith(FORMULA_STARTS):
        return shown
    return "'" + shown


# a number's minus sign stays (its cell is a number); a type not listed takes `_csv_cell`
CSV_BY_TYPE = {**TEXT_BY_TYPE, str: _csv_text}


def _csv(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(columns)
    by_type = CSV_BY_TYPE.get
    writer.writerows(
        [by_type(type(v), _csv_cell)(v) for v in map(row.__getitem__, columns)] for row in rows
    )


def _as_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return jsonable(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# one encoder for every row (json.dumps with `default` builds one a call); the times, the only
# values JSON has no spelling for, reach `_as_json`
_ENCODER = json.JSONEncoder(default=_as_json)


def _json_object(row: dict[str, Any], columns: list[str]) -> str:
    return _ENCODER.encode({c: row[c] for c in columns})


def _json(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    separator = "\n"
    out.write("[")
    for row in rows:
        out.write(separator + _json_object(row, columns))
        separator = ",\n"
    out.write("\n]\n" if separator != "\n" else "]\n")


def _jsonl(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    for row in rows:
        out.write(_json_object(row, columns) + "\n")


def _table(rows: Iterator[dict[str, Any]], columns: list[str], out: TextIO, notes: TextIO) -> None:
    """One line per row: a cell's line breaks (a handler's stderr, say) are shown escaped."""
    sample = list(islice(rows, TABLE_SAMPLE))

    def cell(value: Any) -> str:
        return one_line(text(value))

    natural = {
        c: min(TABLE_MAX_WIDTH, max([len(c)] + [len(cell(r[c])) for r in sample])) for c in columns
    }
    kept = _fitting(natural)
    left_out = [c for c in columns if c not in kept]
    if left_out:
        notes.write(
            f"left out to fit {TABLE_WIDTH} columns: {', '.join(left_out)} (choose the columns "
            "with --columns, or see them all with --format csv)\n"
        )
    widths = [natural[c] for c in kept]
    padded = SEPARATOR.join(f"{{:<{width}}}" for width in widths)

    def line(cells: list[str]) -> str:
        fitted = [
            cell if len(cell) <= width else cell[: width - 1] + "…"
            for cell, width in zip(cells, widths, strict=True)
        ]
        return padded.format(*fitted).rstrip() + "\n"

    out.write(line(kept))
    if not sample:
        out.write("(no rows)\n")
    for row in chain(sample, rows):
        out.write(line([cell(row[c]) for c in kept]))


def _fitting(widths: dict[str, int]) -> list[str]:
    """The columns that fit TABLE_WIDTH, in their order: the first, then NEEDED_FIRST, then the
    others, each as long as it fits."""
    columns = list(widths)

    def need(name: str) -> tuple[bool, int]:
        rank = NEEDED_FIRST.index(name) if name in NEEDED_FIRST else len(NEEDED_FIRST)
        return name != columns[0], rank

    kept, used = set(), -len(SEPARATOR)
    for name in sorted(columns, key=need):  # stable: the others keep their order
        if used + len(SEPARATOR) + widths[name] <= TABLE_WIDTH:
            kept.add(name)
            used += len(SEPARATOR) + widths[name]
    return [c for c in columns if c in kept]
