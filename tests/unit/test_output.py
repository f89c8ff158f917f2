"""Rows written for a person or a program: each value in one spelling, the columns asked for, a
table that fits 80 columns keeping what is needed first, and JSON that parses back.
(The reports' rows: tests/store/test_reports.py; CSV cells: test_csv_cells.py.)"""

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.base.timeutil import time_shift
from etl.read import output
from etl.read.output import NEEDED_FIRST, TABLE_MAX_WIDTH, TABLE_WIDTH, _fitting

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (2.50, "2.5"),
        (1e20, "1e+20"),
        (7, "7"),
        (Decimal("1.25"), "1.25"),
        ({"b": 1, "a": [True, None]}, '{"a": [true, null], "b": 1}'),
        (NOON, "2026-12-06T12:00:00Z"),
        ("as it is", "as it is"),
    ],
)
def test_each_value_has_one_spelling(value: Any, shown: str) -> None:
    assert output.text(value) == shown


def test_the_columns_asked_for_are_given_in_their_order_and_a_wrong_one_is_refused() -> None:
    available = ["dispatch_id", "site_id", "state"]
    assert output.chosen_columns(None, available) == available
    assert output.chosen_columns(" state,dispatch_id ", available) == ["state", "dispatch_id"]
    with pytest.raises(ValueError) as raised:
        output.chosen_columns("state,x\ny", available)
    assert str(raised.value) == "no column 'x\\\\x0ay': choose from dispatch_id, site_id, state"
    with pytest.raises(ValueError, match=r"no column '\(an empty name\)'"):
        output.chosen_columns("state,", available)
    with pytest.raises(ValueError, match="a column is named twice"):
        output.chosen_columns("state,state", available)


NAMES = [*NEEDED_FIRST, "id", "note", "program", "zone", "error", "created_at"]


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, unique=True).flatmap(
        lambda names: st.fixed_dictionaries(
            {n: st.integers(min_value=2, max_value=TABLE_MAX_WIDTH) for n in names}
        )
    )
)
def test_a_table_keeps_its_first_column_and_as_many_others_as_fit_needed_ones_first(
    widths: dict[str, int],
) -> None:
    kept = _fitting(widths)
    columns = list(widths)
    assert kept[0] == columns[0] and kept == [c for c in columns if c in kept]  # in their order
    used = sum(widths[c] for c in kept) + len(output.SEPARATOR) * (len(kept) - 1)
    assert used <= TABLE_WIDTH
    left_out = [c for c in columns if c not in kept]
    for name in left_out:  # nothing left out would have fitted
        assert used + len(output.SEPARATOR) + widths[name] > TABLE_WIDTH
    needed_out = [c for c in left_out if c in NEEDED_FIRST]
    for name in kept[1:]:  # a column not needed first is kept only if no needed one was left out
        if name not in NEEDED_FIRST and needed_out:
            assert all(widths[n] > widths[name] for n in needed_out)


def written(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> tuple[str, str, int]:
    out, notes = io.StringIO(), io.StringIO()
    count = output.write(iter(rows), columns, out, fmt, notes)
    return out.getvalue(), notes.getvalue(), count


def test_a_table_shows_each_row_on_one_line_cut_to_its_column() -> None:
    rows = [{"id": 1, "note": "first\nsecond"}, {"id": 22, "note": "x" * 60}]
    table, notes, count = written(rows, ["id", "note"], "table")
    assert count == 2 and notes == ""
    assert table.splitlines() == [
        "id  note",
        "1   first\\x0asecond",
        "22  " + "x" * (TABLE_MAX_WIDTH - 1) + "…",
    ]
    assert written([], ["id", "note"], "table")[0] == "id  note\n(no rows)\n"


def test_a_table_too_wide_leaves_out_what_is_not_needed_first_and_says_so() -> None:
    row = {"id": "1", "note": "n" * 40, "dispatch_id": "d" * 20, "site_id": "s" * 20}
    table, notes, _ = written([row], list(row), "table")
    assert table.splitlines()[0].split() == ["id", "dispatch_id", "site_id"]
    assert notes == (
        "left out to fit 80 columns: note (choose the columns with --columns, or see them all "
        "with --format csv)\n"
    )


def test_json_and_json_lines_parse_back_to_the_rows_with_times_as_rfc_3339() -> None:
    rows: list[dict[str, Any]] = [
        {"id": 1, "at": NOON, "kw": 2.5, "ok": True},
        {"id": 2, "at": None, "kw": None, "ok": False},
    ]
    as_json, _, count = written(rows, ["id", "at", "ok"], "json")
    assert count == 2
    assert json.loads(as_json) == [
        {"id": 1, "at": "2026-12-06T12:00:00Z", "ok": True},
        {"id": 2, "at": None, "ok": False},
    ]
    lines, _, _ = written(rows, ["kw", "id"], "jsonl")
    assert [json.loads(line) for line in lines.splitlines()] == [
        {"kw": 2.5, "id": 1},
        {"kw": None, "id": 2},
    ]
    assert written([], ["id"], "json")[0] == "[]\n" and written([], ["id"], "jsonl")[0] == ""


def test_times_are_shifted_each_to_its_rows_program_zone() -> None:
    rows = [{"at": NOON, "zone": "US/Central", "n": 1}, {"at": NOON, "zone": "Asia/Tokyo", "n": 2}]
    shifted = list(output.shift_times(rows, time_shift("program"), lambda row: row["zone"]))
    assert [row["at"].utcoffset() for row in shifted] == [
        ZoneInfo("US/Central").utcoffset(NOON.replace(tzinfo=None)),
        ZoneInfo("Asia/Tokyo").utcoffset(NOON.replace(tzinfo=None)),
    ]
    assert all(row["at"] == NOON for row in shifted) and [r["n"] for r in shifted] == [1, 2]
