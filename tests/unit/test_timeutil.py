"""Times as etl reads and writes them: RFC 3339 from the API, durations and moments from a
person (`--since 24h`, `--until 2024-02-02`), dates in a program's time zone, and `--tz`."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.base.timeutil import (
    LONGEST_DURATION,
    format_rfc3339,
    jsonable,
    local_date,
    parse_duration,
    parse_moment,
    parse_rfc3339,
    time_shift,
    utcnow,
)

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@given(number=st.integers(min_value=0, max_value=10**7), unit=st.sampled_from(list(UNITS)))
def test_a_duration_is_its_number_of_units_up_to_a_hundred_years(number: int, unit: str) -> None:
    length = timedelta(**{UNITS[unit]: number})
    if length <= LONGEST_DURATION:
        assert parse_duration(f"{number}{unit}") == length
    else:
        with pytest.raises(ValueError, match="duration too long"):
            parse_duration(f"{number}{unit}")


@pytest.mark.parametrize("text", ["", "d", "10", "1.5h", "-1d", "+1d", "10D", "1 d", "٣d", "²h"])
def test_what_is_no_duration_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration: .* \(use e\.g\. 30m, 24h, 7d, 2w\)"):
        parse_duration(text)


def test_the_longest_duration_is_a_hundred_years_exactly() -> None:
    assert parse_duration("36600d") == LONGEST_DURATION
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration("36601d")


def test_a_duration_too_long_for_a_float_is_too_long_all_the_same() -> None:
    with pytest.raises(ValueError, match="duration too long"):
        parse_duration("9" * 400 + "s")
    with pytest.raises(ValueError, match="duration too long"):
        parse_duration("9" * 5000 + "s")  # more digits than Python reads as an int
    assert parse_duration("0" * 5000 + "30m") == timedelta(minutes=30)


def test_a_moment_as_a_duration_is_that_long_ago() -> None:
    before = utcnow()
    moment = parse_moment("24h")
    assert before - timedelta(hours=24) <= moment <= utcnow() - timedelta(hours=24)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-02-02", datetime(2024, 2, 2, tzinfo=UTC)),
        ("2024-02-02T09:00", datetime(2024, 2, 2, 9, tzinfo=UTC)),  # UTC unless it says
        ("2024-02-02T09:00Z", datetime(2024, 2, 2, 9, tzinfo=UTC)),
        ("2024-02-02T09:00-06:00", datetime(2024, 2, 2, 15, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_a_moment_as_a_time_is_in_utc(text: str, moment: datetime) -> None:
    parsed = parse_moment(text)
    assert parsed == moment and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["tomorrow", "2024-13-01", "0001-01-01T00:00+14:00", "10000-01-01", "24x", ""]
)
def test_what_is_no_moment_is_refused_saying_what_is(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a time: .*years 1 to 9999 in UTC"):
        parse_moment(text)


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(8999, 12, 31),
        timezones=st.sampled_from([UTC, ZoneInfo("US/Central"), ZoneInfo("Asia/Kolkata")]),
    )
)
def test_a_time_written_for_the_api_reads_back_as_the_same_instant(moment: datetime) -> None:
    written = format_rfc3339(moment)
    assert written.endswith("Z") and "+" not in written
    # as instants: an ambiguous local time (a clock set back) equals no time of another zone
    assert parse_rfc3339(written) == moment.astimezone(UTC)


@given(digits=st.text(alphabet="0123456789", min_size=1, max_size=12))
def test_digits_beyond_the_microsecond_are_dropped_not_rounded(digits: str) -> None:
    parsed = parse_rfc3339(f"2023-06-29T14:53:36.{digits}Z")
    assert parsed.microsecond == int(digits[:6].ljust(6, "0"))


def test_a_date_is_the_programs_or_utcs_when_its_zone_is_unknown() -> None:
    late_evening = datetime(2024, 2, 2, 3, 0, tzinfo=UTC)  # 21:00 the day before in Chicago
    assert local_date(late_evening, "US/Central") == "2024-02-01"
    assert local_date(late_evening, "Asia/Tokyo") == "2024-02-02"
    for unknown in ("US/Nowhere", "America", "Z" * 300, "../../etc/passwd", ""):
        assert local_date(late_evening, unknown) == "2024-02-02"


NOON = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)


def test_tz_shows_a_time_in_utc_its_programs_zone_or_a_named_one() -> None:
    assert time_shift("UTC")(NOON, "US/Central") == NOON
    program = time_shift("program")
    assert program(NOON, "US/Central").isoformat() == "2026-12-06T12:00:00-06:00"
    assert program(NOON, None).utcoffset() == timedelta(0)
    assert program(NOON, "US/Nowhere").utcoffset() == timedelta(0)
    assert time_shift("Asia/Kolkata")(NOON, "US/Central").isoformat() == (
        "2026-12-06T23:30:00+05:30"
    )
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Base'.*utc, local, program"):
        time_shift("Mars/Base")


def test_a_time_in_json_is_rfc_3339_with_its_own_offset_and_the_rest_as_it_is() -> None:
    assert jsonable(NOON) == "2026-12-06T18:00:00Z"
    assert jsonable(NOON.astimezone(ZoneInfo("US/Central"))) == "2026-12-06T12:00:00-06:00"
    assert jsonable(3) == 3 and jsonable(None) is None and jsonable("Z") == "Z"
