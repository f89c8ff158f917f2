"""A reading for Voltus checked before it is queued, and lines of CSV or JSON read as readings:
a known site and meter, an interval the API takes, a timestamp at an interval's end and not in
the future, one finite value within a site's bounds. (Queued in the outbox, and sent:
tests/store/test_outbox.py.)"""

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.base.vocabulary import OutboxEndpoint, ReadingUnits
from etl.ingest.readings import MOST_LINE_CHARS, NotReadings, _records, check, read_lines
from etl.source.records import MAX_KW

NOW = datetime(2026, 12, 6, 12, 0, 10, tzinfo=UTC)
METERS: dict[str, Any] = {
    "one": [{"id": "m1", "asset_type": "load"}],
    "two": [{"id": "m2", "asset_type": "poi"}, {"id": "m3", "asset_type": "battery"}],
    "battery": [{"id": "b1", "asset_type": "battery"}],
    "unknown": None,  # GET /sites not asked yet
}
TELEMETRY, LOAD = OutboxEndpoint.TELEMETRY, OutboxEndpoint.CONTROLLABLE_LOAD


def fields(**changed: Any) -> dict[str, Any]:
    return {"site_id": "one", "timestamp": "2026-12-06T12:00:00Z", "kw": "12.5", **changed}


def test_a_reading_of_a_sites_only_meter_is_queued_by_that_meter() -> None:
    queued = check(fields(), TELEMETRY, METERS, NOW)
    assert (queued.site_id, queued.meter_id, queued.units, queued.value) == (
        "one",
        "m1",
        ReadingUnits.KW,
        12.5,
    )
    assert (queued.interval_end, queued.interval_seconds) == (NOW - timedelta(seconds=10), 30)
    assert check(fields(meter_id="m1"), TELEMETRY, METERS, NOW).key == queued.key  # one reading


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"site_id": "nowhere"}, "unknown site 'nowhere' (etl fetch --sites lists them)"),
        ({"site_id": ""}, "no site_id"),
        ({"site_id": 7}, "site_id is not an id"),
        ({"site_id": "unknown"}, "the meters of site 'unknown' are unknown: run etl fetch --sites"),
        ({"site_id": "two"}, "site 'two' has 2 meters: name one in meter_id"),
        ({"meter_id": "m9"}, "site 'one' has no meter 'm9'"),
        ({"kw": None, "kwh": "3"}, "kWh is a battery's state of charge: this meter is not"),
        ({"kwh": "3"}, "give one of kw and kwh"),
        ({"kw": ""}, "give one of kw and kwh"),
        ({"kw": "twelve"}, "kw is not a number: 'twelve'"),
        ({"kw": "nan"}, "kw is not a number"),
        ({"kw": float("inf")}, "kw is not finite"),
        ({"kw": True}, "kw is not a number"),
        ({"kw": str(MAX_KW * 2)}, "kw 2e+06 is beyond any site's"),
        ({"kw": "1e-9"}, "under any meter's resolution"),
        ({"interval_seconds": "45"}, "interval_seconds must be 30, 60, ... or 300"),
        ({"interval_seconds": "330"}, "interval_seconds must be 30, 60, ... or 300"),
        ({"interval_seconds": "60.5"}, "interval_seconds must be 30, 60, ... or 300"),
        ({"timestamp": "2026-12-06T12:00:15Z"}, "is not the end of a 30-second interval"),
        ({"timestamp": "2026-12-06T12:00:00.5Z"}, "is not the end of a 30-second interval"),
        ({"timestamp": "2026-12-06T12:00:30Z"}, "is in the future: an interval is sent once"),
        ({"timestamp": "2026-12-06 12:00"}, "timestamp: not an RFC 3339 time"),
        ({"timestamp": None}, "timestamp: expected an RFC 3339 time string, got NoneType"),
    ],
)
def test_a_reading_that_cannot_be_sent_says_why(changed: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        check(fields(**changed), TELEMETRY, METERS, NOW)
    assert reason in str(raised.value)


def test_a_batterys_state_of_charge_is_in_kwh_and_not_negative() -> None:
    charge = check(fields(site_id="battery", kw=None, kwh="80"), TELEMETRY, METERS, NOW)
    assert (charge.meter_id, charge.units, charge.value) == ("b1", ReadingUnits.KWH, 80.0)
    named = check(fields(site_id="two", meter_id="m3", kw="", kwh="1"), TELEMETRY, METERS, NOW)
    assert named.meter_id == "m3"
    with pytest.raises(ValueError, match="a state of charge is not negative"):
        check(fields(site_id="battery", kw=None, kwh="-1"), TELEMETRY, METERS, NOW)


def test_controllable_load_is_a_sites_own_in_kw_whatever_its_meters() -> None:
    load = check(fields(site_id="two"), LOAD, METERS, NOW)
    assert (load.site_id, load.meter_id, load.endpoint) == ("two", "", LOAD)
    assert check(fields(site_id="unknown"), LOAD, METERS, NOW).site_id == "unknown"
    with pytest.raises(ValueError, match="leave meter_id out"):
        check(fields(meter_id="m1"), LOAD, METERS, NOW)
    with pytest.raises(ValueError, match="controllable load is in kW"):
        check(fields(site_id="battery", kw=None, kwh="3"), LOAD, METERS, NOW)


@given(
    interval=st.sampled_from([30, 60, 90, 120, 150, 180, 210, 240, 270, 300]),
    end_seconds=st.integers(min_value=0, max_value=86_400),
)
def test_a_timestamp_is_taken_exactly_when_an_interval_of_its_length_ends_then(
    interval: int, end_seconds: int
) -> None:
    # intervals are counted from the epoch: this moment ends one of every length at once
    every_length = datetime.fromtimestamp(30 * 2520 * 23_000, UTC)
    end = every_length + timedelta(seconds=end_seconds)
    given_fields = fields(timestamp=end.isoformat(), interval_seconds=str(interval))
    try:
        queued = check(given_fields, TELEMETRY, METERS, end)
    except ValueError:
        assert end_seconds % interval
    else:
        assert end_seconds % interval == 0 and queued.interval_seconds == interval


@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-2 * MAX_KW, max_value=2 * MAX_KW)
)
def test_a_kw_written_as_text_is_the_number_it_writes(kw: float) -> None:
    try:
        queued = check(fields(kw=repr(kw)), TELEMETRY, METERS, NOW)
    except ValueError:
        assert abs(kw) > MAX_KW or 0 < abs(kw) < 0.000001
    else:
        assert queued.value == kw


def records(*lines: str) -> list[tuple[int, str, Any]]:
    return list(_records(lines))


def test_csv_lines_are_read_by_their_header_in_any_case_and_order() -> None:
    read = records(
        "\ufeffTimestamp, Site_ID ,KW\r\n",  # as Excel writes it
        "\n",
        "2026-12-06T12:00:00Z,one,12.5\n",
        '2026-12-06T12:00:30Z,"on,e",3\n',
        "2026-12-06T12:01:00Z,one\n",
    )
    assert read == [
        (3, "2026-12-06T12:00:00Z,one,12.5", fields()),
        (
            4,
            '2026-12-06T12:00:30Z,"on,e",3',
            fields(site_id="on,e", timestamp="2026-12-06T12:00:30Z", kw="3"),
        ),
        (5, "2026-12-06T12:01:00Z,one", "2 cells where the header has 3"),
    ]


@pytest.mark.parametrize(
    ("header", "lacks"),
    [
        ("site_id,timestamp", "kw (or kwh)"),
        ("kw,timestamp", "site_id"),
        ("meter_id,kwh", "site_id, timestamp"),
    ],
)
def test_a_csv_header_without_the_columns_needed_is_no_readings(header: str, lacks: str) -> None:
    with pytest.raises(NotReadings) as raised:
        records(header + "\n", "x,y\n")
    assert str(raised.value) == f"line 1: the CSV header lacks {lacks}"


def test_json_lines_are_objects_and_a_dict_from_a_plug_in_is_one_already() -> None:
    read = list(_records(['{"site_id": "one", "kw": 1}\n', "[1]\n", "{oops\n", {"site_id": "one"}]))
    assert [(n, why) for n, _, why in read] == [
        (1, {"site_id": "one", "kw": 1}),
        (2, "not a JSON object"),
        (3, "not a JSON line"),
        (4, {"site_id": "one"}),
    ]
    assert read[3][1] == '{"site_id": "one"}'


def test_a_line_too_long_to_be_a_reading_comes_cut_and_the_rest_of_it_skipped() -> None:
    text = io.StringIO("a,b\n" + "x" * (3 * MOST_LINE_CHARS) + "\nlast\n")
    lines = list(read_lines(text))
    assert [len(line) for line in lines] == [4, MOST_LINE_CHARS + 2, 5]
    assert lines[-1] == "last\n"
    (number, line, why) = records("site_id,timestamp,kw\n", lines[1])[0]
    assert number == 2 and len(line) == MOST_LINE_CHARS
    assert why == f"a line of over {MOST_LINE_CHARS} characters"
