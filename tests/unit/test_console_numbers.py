"""How the console writes a number of kW (its `kw` filter): the history page showed a delivery
that rounds to nothing from below as -0.0."""

from etl.console.app import _kw


def test_kw_has_one_decimal_and_no_negative_zero() -> None:
    assert [_kw(v) for v in (None, 1234.56, -0.04, 0.0, -0.05, -1.25)] == [
        "—",
        "1,234.6",
        "0.0",
        "0.0",
        "-0.1",
        "-1.2",
    ]
