"""UTCDateTime on SQLite writes and reads SQLAlchemy's own DATETIME text, in fewer steps."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite

from etl.store.schema import UTCDateTime

DIALECT = sqlite.dialect()
_BIND = sqlite.DATETIME().bind_processor(DIALECT)
_RESULT = sqlite.DATETIME().result_processor(DIALECT, None)
assert _BIND is not None and _RESULT is not None  # SQLite's DATETIME converts both ways
SQLALCHEMY_TEXT, SQLALCHEMY_READ = _BIND, _RESULT


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 12, 6, 3, 4, 5, tzinfo=UTC),  # no microseconds: still 6 digits
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(8999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 8, 1, 30, tzinfo=timezone(timedelta(hours=-5))),  # not UTC: converted
    ],
)
def test_the_text_is_sqlalchemys_and_reads_back_as_the_same_time(value: datetime) -> None:
    text = UTCDateTime().process_bind_param(value, DIALECT)
    assert text == SQLALCHEMY_TEXT(value.astimezone(UTC).replace(tzinfo=None))
    read = UTCDateTime().process_result_value(text, DIALECT)
    assert read == value
    assert read is not None and read.tzinfo is UTC


def test_text_written_by_sql_without_a_fraction_reads_as_sqlalchemy_reads_it() -> None:
    # e.g. SQLite's datetime('now'), or a row a user wrote by hand
    text = "2026-12-06 03:04:05"
    read_by_sqlalchemy = SQLALCHEMY_READ(text)
    assert read_by_sqlalchemy is not None
    assert UTCDateTime().process_result_value(text, DIALECT) == read_by_sqlalchemy.replace(
        tzinfo=UTC
    )


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 12, 6), DIALECT)
