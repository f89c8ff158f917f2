"""Readings from the outbox as the requests the API takes, decided before any is sent: one units
per request, but a battery's kW and kWh together (or not yet), each point by its meter or, for
controllable load, by its site. (Sending them: tests/store/test_outbox.py.)"""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from etl.act.send_telemetry import _batteries, _point, _requests
from etl.base.vocabulary import OutboxEndpoint, ReadingUnits
from etl.store.outbox import Held, Queued

END = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
KW, KWH = ReadingUnits.KW, ReadingUnits.KWH
METERS = {
    "a": [{"id": "load", "asset_type": "load"}, {"id": "bat", "asset_type": "battery"}],
    "b": [{"id": "only", "asset_type": "battery"}],
    "c": None,
}


def held(n: int, site: str, meter: str, units: ReadingUnits) -> Held:
    reading = Queued(OutboxEndpoint.TELEMETRY, site, meter, END, 30, units, float(n))
    return Held(n, END, reading)


def test_a_battery_is_each_battery_meter_and_the_site_of_one_that_is_its_only_meter() -> None:
    assert _batteries(METERS) == {("a", "bat"), ("b", "only"), ("b", "")}


def test_a_batterys_kw_and_kwh_go_together_or_wait_for_each_other() -> None:
    batteries = _batteries(METERS)
    claimed = [
        held(1, "a", "load", KW),
        held(2, "a", "bat", KW),
        held(3, "a", "bat", KWH),
        held(4, "b", "", KW),  # by its site, its one meter a battery: no kWh yet
        held(5, "c", "m", KWH),
    ]
    requests = [[h.id for h in request] for request in _requests(claimed, batteries)]
    assert sorted(requests) == [[1], [2, 3], [5]]


readings = st.lists(
    st.builds(
        held,
        st.integers(0, 10_000),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["load", "bat", "only", "", "m"]),
        st.sampled_from([KW, KWH]),
    ),
    max_size=30,
    unique_by=lambda h: h.id,
)


@given(readings)
def test_every_request_has_one_units_or_is_one_batterys_both(claimed: list[Held]) -> None:
    batteries = _batteries(METERS)
    requests = _requests(claimed, batteries)
    sent = [h.id for request in requests for h in request]
    assert len(sent) == len(set(sent)) and set(sent) <= {h.id for h in claimed}
    for request in requests:
        meters = {(h.reading.site_id, h.reading.meter_id) for h in request}
        units = {h.reading.units for h in request}
        if meters & batteries:
            assert len(meters) == 1 and units == {KW, KWH}
        else:
            assert len(units) == 1
    held_back = [h for h in claimed if h.id not in sent]  # only a battery's, missing a units
    for h in held_back:
        meter = (h.reading.site_id, h.reading.meter_id)
        assert meter in batteries
        assert {
            o.reading.units for o in claimed if (o.reading.site_id, o.reading.meter_id) == meter
        } != {KW, KWH}


def test_a_point_names_its_meter_or_else_its_site() -> None:
    metered = Queued(OutboxEndpoint.TELEMETRY, "a", "m1", END + timedelta(seconds=30), 30, KW, 2.5)
    assert _point(metered) == {
        "timestamp": "2026-12-06T12:00:30Z",
        "interval_seconds": 30,
        "units": "kW",
        "value": 2.5,
        "meter_id": "m1",
    }
    load = Queued(OutboxEndpoint.CONTROLLABLE_LOAD, "a", "", END, 60, KW, 0.0)
    assert _point(load) == {
        "timestamp": "2026-12-06T12:00:00Z",
        "interval_seconds": 60,
        "units": "kW",
        "value": 0.0,
        "site_id": "a",
    }
