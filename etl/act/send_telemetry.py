"""Sending the outbox's readings to Voltus (etl.store.outbox): a batch at a time, each reading
held by this sender while its request is out and marked sent only once Voltus answered 2xx.

A crash between the answer and the mark leaves the reading to be sent again when its hold
expires, which the reference allows ("We'll handle the de-duplication of double-submitted
points"): each reading reaches Voltus at least once, and counts once. A request is at most
MOST_POINTS readings of one endpoint and one units (a battery meter's power and state of charge
go together, as the reference asks); one answered 413 (too many points) or 400 (a reading it
refuses) is split in two, down to single readings, and a single reading refused is set aside
(`refused`), so that one bad reading never holds up the others.
"""

import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from etl.base.errors import ApiError
from etl.base.logs import log
from etl.base.timeutil import format_rfc3339, utcnow
from etl.source.api import VoltusClient
from etl.store import binding, outbox
from etl.store.db import read_transaction, write_transaction
from etl.store.outbox import Held, Queued
from etl.store.vocabulary import OutboxEndpoint, ReadingUnits

__all__ = ["HOLD", "MOST_POINTS", "REFUSALS", "SendSummary", "drain"]

MOST_POINTS = 2048  # the reference: "We recommend keeping requests to 2048 points or fewer"
HOLD = timedelta(minutes=5)  # a request's readings are left to this sender that long
# answers that refuse the request's readings, not the account: a request of many is split until
# the refused reading stands alone, and that one is set aside, so that it never blocks the rest
REFUSALS = (400, 413)
Claimed = list[Held]


@dataclass
class SendSummary:
    sent: int = 0  # readings Voltus answered 2xx for
    requests: int = 0
    split: int = 0  # requests answered 413 or 400, sent again in halves
    refused: int = 0  # readings Voltus refused alone (400): set aside, not sent again
    waiting: int = 0  # readings left in the outbox


def drain(
    engine: Engine,
    client: VoltusClient,
    stop: threading.Event | None = None,
    most: int = MOST_POINTS,
) -> SendSummary:
    """Send what waits, until nothing does (or `stop` is set). An API error other than a
    refusal of readings (REFUSALS) ends the drain: the readings in hand are let go at once, for
    the next drain, and the error raised."""
    binding.check(engine, client.settings.url, client.settings.key)  # this store's account only
    summary = SendSummary()
    while stop is None or not stop.is_set():
        now = utcnow()
        with write_transaction(engine) as conn:
            claimed = outbox.claim(conn, now, HOLD, most)
            meters = outbox.site_meters(conn) if claimed else {}
        if not claimed:
            break
        try:
            for request in _requests(claimed, _batteries(meters)):
                _send(engine, client, request, summary)
        except ApiError:
            with write_transaction(engine) as conn:  # those not sent, for the next drain
                outbox.release(conn, [held.id for held in claimed])
            raise
    with read_transaction(engine) as conn:
        summary.waiting = outbox.waiting(conn).readings
    return summary


def _batteries(meters: outbox.Meters) -> set[tuple[str, str]]:
    """(site, meter) of each battery meter; (site, '') too for a site whose one meter is."""
    found = set()
    for site_id, listed in meters.items():
        for meter in listed or []:
            if meter.get("asset_type") == "battery":
                found.add((site_id, meter["id"]))
                if len(listed or []) == 1:
                    found.add((site_id, ""))
    return found


def _requests(claimed: Claimed, batteries: set[tuple[str, str]]) -> list[Claimed]:
    """The claimed readings as requests the API takes: one units per request, but a battery
    meter's kW and kWh together; a battery's readings that lack either wait (held) for it."""
    groups: dict[tuple[str, ...], Claimed] = {}
    for item in claimed:
        reading = item.reading
        meter = (reading.site_id, reading.meter_id)
        key = ("battery", *meter) if meter in batteries else ("units", str(reading.units))
        groups.setdefault(key, []).append(item)
    return [
        group
        for key, group in groups.items()
        if key[0] != "battery" or {held.reading.units for held in group} == set(ReadingUnits)
    ]


def _send(engine: Engine, client: VoltusClient, request: Claimed, summary: SendSummary) -> None:
    summary.requests += 1
    try:
        client.post_telemetry(
            request[0].reading.endpoint == OutboxEndpoint.CONTROLLABLE_LOAD,
            [_point(held.reading) for held in request],
        )
    except ApiError as error:
        if error.status not in REFUSALS:
            raise  # the API down, the key refused: nothing to do about the readings
        if len(request) > 1:  # too many points, or one bad among them: halves, to find it
            summary.split += 1
            half = len(request) // 2
            _send(engine, client, request[:half], summary)
            _send(engine, client, request[half:], summary)
            return
        with write_transaction(engine) as conn:
            outbox.refuse(conn, request[0], str(error))
        summary.refused += 1
        log.warning("telemetry refused: %s", error)
        return
    with write_transaction(engine) as conn:
        outbox.mark_sent(conn, request, utcnow())
    summary.sent += len(request)


def _point(reading: Queued) -> dict[str, object]:
    """A reading as the API takes it: by its meter (etl.ingest.readings names the meter of a
    site that has one), or by its site for controllable load."""
    point: dict[str, object] = {
        "timestamp": format_rfc3339(reading.interval_end),
        "interval_seconds": reading.interval_seconds,
        "units": str(reading.units),
        "value": reading.value,
    }
    if reading.meter_id:
        point["meter_id"] = reading.meter_id
    else:
        point["site_id"] = reading.site_id
    return point
