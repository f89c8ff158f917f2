"""No text cell of a CSV etl writes begins as a spreadsheet formula, whatever the text; the
apostrophe that neutralizes one is all that is added, and numbers stay numbers."""

import csv
import io
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from etl.read import output

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMULAS = ["=1+1", '=HYPERLINK("http://evil")', "+1", "-1+2", "@SUM(A1)", "\t=1", "\r=1"]


def written(values: list[Any]) -> list[str]:
    out = io.StringIO()
    output.write(iter([{"v": v} for v in values]), ["v"], out, "csv")
    header, *cells = csv.reader(io.StringIO(out.getvalue(), newline=""))
    assert header == ["v"]
    return [cell for (cell,) in cells]


@given(st.lists(st.one_of(st.sampled_from(FORMULAS), st.text()), min_size=1))
def test_no_text_cell_begins_as_a_formula(values: list[str]) -> None:
    cells = written(values)
    assert len(cells) == len(values)
    for value, cell in zip(values, cells, strict=True):
        assert not cell.startswith(FORMULA_STARTS)
        assert cell == ("'" + value if value.startswith(FORMULA_STARTS) else value)


def test_numbers_stay_numbers() -> None:
    assert written([-5, -2.5, Decimal("-1.25"), 0, 3]) == ["-5", "-2.5", "-1.25", "0", "3"]
