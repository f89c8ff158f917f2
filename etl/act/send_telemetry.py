"""Sending the outbox's readings to Voltus (etl.store.outbox): a batch at a time, each reading
held by this sender while its request is out and marked sent only once Voltus answered 2xx.

A crash between the answer and the mark leaves the reading to be sent again when its hold
expires, which the reference allows ("We'll handle the de-duplication of double-submitted
points"): each reading reaches Voltus at least once, and counts once. A request is at most
MOST_POINTS readings of one endpoint and one units (a battery meter's power and state of charge
go together, as the reference asks); one answered 413 (too many points) or 400 (a reading it
refuses) is split in two, down to single readings, within a budget (SPLIT_BUDGET). A reading
refused alone is set aside (`refused`), so that one bad reading never holds up the others, but
only when Voltus took other readings of its endpoint in the same drain: when it took none, it
refused them whole (a fault of the requests, or of Voltus), and they all stay queued, held back
for a while (LEAST_BACKOFF), and the drain ends with that error.

The outbox keeps its sent readings for a while (ETL_OUTBOX_KEEP, OUTBOX_KEEP by default) as the
record of what Voltus took; each drain that ends well prunes those sent before that, the oldest
first, PRUNE_BATCH in a transaction and at most PRUNE_MOST a drain (a fleet of 5,000 sites sends
14.4 million readings a day: ten drains a minute's worth).
"""

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from etl.base.config import OUTBOX_KEEP
from etl.base.errors import ApiError
from etl.base.logs import log
from etl.base.timeutil import format_rfc3339, utcnow
from etl.base.vocabulary import OutboxEndpoint, ReadingUnits
from etl.source.api import VoltusClient
from etl.store import binding, outbox
from etl.store.db import read_transaction, write_transaction
from etl.store.outbox import Held, Queued

__all__ = [
    "HOLD",
    "LEAST_BACKOFF",
    "MOST_BACKOFF",
    "MOST_POINTS",
    "REFUSALS",
    "SPLIT_BUDGET",
    "SendSummary",
    "drain",
]

MOST_POINTS = 2048  # the reference: "We recommend keeping requests to 2048 points or fewer"
HOLD = timedelta(minutes=5)  # a request's readings are left to this sender that long
# answers that refuse the request's readings, not the account: a request of many is split to
# find the readings refused, so that they never block the rest
REFUSALS = (400, 413)
# splits of a drain whose halves Voltus both refused; past them, a request refused is left
# unsplit, for the next drain. A split with a half taken is free: finding one bad reading among
# 2,048 costs none, finding d costs d - 1. So a request Voltus refuses whole costs at most
# 2 x 12 + 1 = 25 requests, where splitting it down to each reading cost 2n - 1 (4,095 for 2,048)
SPLIT_BUDGET = 12
# readings Voltus refused whole are sent again after as long as the oldest of them has waited,
# so that the tries thin out, within these bounds. At least 20 minutes: while over 10 of them
# are left, the hold is longer than any send's (HOLD) and etl status says why the readings wait
# (etl.read.status); once under 10, they have waited its OUTBOX_LATE, which it warns of too
LEAST_BACKOFF, MOST_BACKOFF = timedelta(minutes=20), timedelta(hours=1)
PRUNE_BATCH, PRUNE_MOST = 5_000, 100_000
Claimed = list[Held]


@dataclass
class SendSummary:
    sent: int = 0  # readings Voltus answered 2xx for
    requests: int = 0
    split: int = 0  # requests answered 413 or 400, sent again in halves
    refused: int = 0  # readings Voltus refused alone (400): set aside, not sent again
    waiting: int = 0  # readings left in the outbox
    pruned: int = 0  # readings sent longer ago than the outbox keeps them, deleted


def drain(
    engine: Engine,
    client: VoltusClient,
    stop: threading.Event | None = None,
    most: int = MOST_POINTS,
    keep: timedelta = OUTBOX_KEEP,
) -> SendSummary:
    """Send what waits, until nothing does (or `stop` is set). An API error other than a
    refusal of readings (REFUSALS) ends the drain: the readings in hand are let go at once, for
    the next drain, and the error raised; so is Voltus refusing them whole (`_Sending.settle`)
    once the drain is over."""
    binding.check(engine, client.settings.url, client.settings.key)  # this store's account only
    sending = _Sending(engine, client, SPLIT_BUDGET)
    try:
        while stop is None or not stop.is_set():
            with write_transaction(engine) as conn:
                claimed = outbox.claim(conn, utcnow(), HOLD, most)
                meters = outbox.site_meters(conn) if claimed else {}
            if not claimed:
                break
            try:
                for request in _requests(claimed, _batteries(meters)):
                    sending.send(request)
                sending.hold_refused()
            except ApiError:
                refused = {held.id for held in sending.refused()}  # settled below
                with write_transaction(engine) as conn:  # those not sent, for the next drain
                    outbox.release(conn, [held.id for held in claimed if held.id not in refused])
                raise
    finally:  # an error that ends the drain leaves what Voltus refused settled all the same
        refused_whole = sending.settle()
    if refused_whole is not None:
        raise refused_whole
    with read_transaction(engine) as conn:
        sending.summary.waiting = outbox.waiting(conn).readings
    sending.summary.pruned = _prune(engine, utcnow() - keep)
    return sending.summary


def _prune(engine: Engine, sent_before: datetime) -> int:
    pruned = 0
    while pruned < PRUNE_MOST:
        with write_transaction(engine) as conn:
            deleted = outbox.prune(conn, sent_before, PRUNE_BATCH)
        pruned += deleted
        if deleted < PRUNE_BATCH:
            break
    return pruned


@dataclass
class _Sending:
    """One drain's requests, and what Voltus made of them: the endpoints it took readings of,
    and the readings it refused, settled once the drain is over."""

    engine: Engine
    client: VoltusClient
    splits_left: int  # of SPLIT_BUDGET
    summary: SendSummary = field(default_factory=SendSummary)
    taken: set[OutboxEndpoint] = field(default_factory=set)
    alone: list[tuple[Held, ApiError]] = field(default_factory=list)  # refused in a request alone
    unsplit: list[tuple[Held, ApiError]] = field(default_factory=list)  # no split was left
    held: set[int] = field(default_factory=set)  # of those, the ids held for the whole drain

    def send(self, request: Claimed) -> None:
        refusal = self._post(request)
        if refusal is not None:
            self._split(request, refusal)

    def _post(self, request: Claimed) -> ApiError | None:
        """Voltus's refusal of the request (REFUSALS), or None: it took the readings."""
        self.summary.requests += 1
        endpoint = request[0].reading.endpoint
        try:
            self.client.post_telemetry(
                endpoint == OutboxEndpoint.CONTROLLABLE_LOAD,
                [_point(held.reading) for held in request],
            )
        except ApiError as error:
            if error.status not in REFUSALS:
                raise  # the API down, the key refused: nothing to do about the readings
            return error
        with write_transaction(self.engine) as conn:
            outbox.mark_sent(conn, request, utcnow())
        self.summary.sent += len(request)
        self.taken.add(endpoint)
        return None

    def _split(self, request: Claimed, refusal: ApiError) -> None:
        """Both halves sent, then each one refused split in turn: what Voltus takes goes early,
        and a split whose halves are both refused spends the budget."""
        if len(request) == 1:
            self.alone.append((request[0], refusal))
            return
        if not self.splits_left:
            self.unsplit += [(held, refusal) for held in request]
            return
        self.summary.split += 1
        half = len(request) // 2
        halves = [(part, self._post(part)) for part in (request[:half], request[half:])]
        refused = [(part, error) for part, error in halves if error is not None]
        if len(refused) == 2:
            self.splits_left -= 1
        for part, error in refused:
            self._split(part, error)

    def refused(self) -> list[Held]:
        return [held for held, _ in self.alone + self.unsplit]

    def hold_refused(self) -> None:
        """Keep the readings refused so far out of this drain's next claims until `settle`: a
        drain longer than HOLD took them again, sent them again and counted them twice."""
        ids = [held.id for held in self.refused() if held.id not in self.held]
        if ids:
            with write_transaction(self.engine) as conn:
                outbox.release(conn, ids, utcnow() + MOST_BACKOFF)
            self.held.update(ids)

    def settle(self) -> ApiError | None:
        """Where Voltus took readings of their endpoint, those it refused alone are set aside
        and the unsplit let go, for the next drain. Where it took none, it refused them whole,
        not for what each reading is: all stay queued, held back (LEAST_BACKOFF), and the error
        is returned."""
        if not self.alone and not self.unsplit:
            return None
        aside = [(held, error) for held, error in self.alone if held.reading.endpoint in self.taken]
        unsplit = [held for held, _ in self.unsplit if held.reading.endpoint in self.taken]
        whole = [
            (held, error)
            for held, error in self.alone + self.unsplit
            if held.reading.endpoint not in self.taken
        ]
        now = utcnow()
        waited = now - min((held.queued_at for held, _ in whole), default=now)
        backoff = min(max(waited, LEAST_BACKOFF), MOST_BACKOFF)
        with write_transaction(self.engine) as conn:
            for held, error in aside:
                outbox.refuse(conn, held, str(error))
            outbox.release(conn, [held.id for held in unsplit])
            outbox.release(conn, [held.id for held, _ in whole], now + backoff)
        for _, error in aside:
            log.warning("telemetry refused: %s", error)
        self.summary.refused += len(aside)
        if not whole:
            return None
        first = whole[0][1]
        return ApiError(
            f"Voltus refused {len(whole)} readings whole, taking none of their endpoint's: "
            f"{first.message}; they stay queued, sent again in {backoff // timedelta(minutes=1)} "
            "minutes",
            "a fault of the requests or of Voltus, not of each reading; etl status warns of them",
            status=first.status,
        )


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
