"""The telemetry outbox (`telemetry_outbox`, `telemetry_outbox_rejected`): readings waiting to be
sent to Voltus, each held by one sender at a time and marked sent only once Voltus answered 2xx
to a request that held it. The one module that queries these tables.

A reading is its key (endpoint, site, meter, interval end, interval length, units): queued again
with the same value it is already there; with another, it is a correction, to be sent again.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)

from etl.base.payloads import fingerprint
from etl.base.vocabulary import OutboxEndpoint, ReadingUnits
from etl.store.rows import chunks, write_many
from etl.store.schema import sites, telemetry_outbox, telemetry_outbox_rejected

__all__ = [
    "Held",
    "HeldBack",
    "Meters",
    "Queued",
    "QueuedCounts",
    "RejectedLine",
    "Waiting",
    "claim",
    "enqueue",
    "held_back",
    "mark_sent",
    "newest_readings",
    "prune",
    "refuse",
    "release",
    "sendable",
    "set_aside",
    "site_meters",
    "waiting",
]

Meters = dict[str, list[dict[str, str]] | None]  # by site: its meters per GET /sites, or None
KEY = ("endpoint", "site_id", "meter_id", "interval_end", "interval_seconds", "units")
LINE_CHARS = 1000  # of a rejected line, kept


@dataclass(frozen=True, slots=True)
class Queued:
    """A reading for the outbox; `meter_id` '' for one sent by its site."""

    endpoint: OutboxEndpoint
    site_id: str
    meter_id: str
    interval_end: datetime
    interval_seconds: int
    units: ReadingUnits
    value: float

    @property
    def key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in KEY)


@dataclass(frozen=True, slots=True)
class RejectedLine:
    source: str
    line_number: int
    line: str
    reason: str


@dataclass(frozen=True, slots=True)
class Held:
    """A reading a sender holds: its row, and its queue time then (a correction moves it)."""

    id: int
    queued_at: datetime
    reading: Queued


@dataclass
class QueuedCounts:
    queued: int = 0  # new readings
    corrected: int = 0  # readings queued before with another value: sent again
    unchanged: int = 0  # queued before with this value (sent or not)


@dataclass(frozen=True)
class Waiting:
    readings: int
    oldest_queued_at: datetime | None


@dataclass(frozen=True)
class HeldBack:
    readings: int
    until: datetime | None  # the earliest any of them may be sent again


def site_meters(conn: Connection) -> Meters:
    """Each stored site with its meters as GET /sites listed them (None: not fetched yet)."""
    return {row.id: row.meters for row in conn.execute(select(sites.c.id, sites.c.meters))}


def enqueue(conn: Connection, readings: list[Queued], now: datetime) -> QueuedCounts:
    """Queue the readings; of several with one key, the last counts."""
    counts = QueuedCounts()
    latest = {reading.key: reading for reading in readings}
    t = telemetry_outbox.c
    for chunk in chunks(latest):
        stored = {
            tuple(row[:-1]): row[-1]
            for row in conn.execute(
                select(*(t[name] for name in KEY), t.value).where(_spans(chunk))
            )
        }
        new = [latest[key] for key in chunk if key not in stored]
        write_many(
            conn,
            telemetry_outbox.insert(),
            [{**{n: getattr(r, n) for n in KEY}, "value": r.value, "queued_at": now} for r in new],
        )
        counts.queued += len(new)
        for key in chunk:
            if key in stored and stored[key] != latest[key].value:
                conn.execute(
                    update(telemetry_outbox)
                    .where(*(t[name] == value for name, value in zip(KEY, key, strict=True)))
                    # a sender may hold it with its old value: its hold stays (see mark_sent)
                    .values(value=latest[key].value, queued_at=now, sent_at=None, refused=None)
                )
                counts.corrected += 1
            elif key in stored:
                counts.unchanged += 1
    return counts


def _spans(keys: list[tuple[Any, ...]]) -> ColumnElement[bool]:
    """Each site of these keys over the span of its own readings' times: a range of the index on
    (site_id, interval_end) per site, so that a reading reads no more than its own site's rows
    near it (an IN of whole keys made PostgreSQL scan the table; one span for all the sites
    read every site's rows between the oldest and the newest reading of any)."""
    ends: dict[str, list[datetime]] = {}
    for key in keys:
        ends.setdefault(key[1], []).append(key[3])
    t = telemetry_outbox.c
    return or_(
        *(
            and_(t.site_id == site_id, t.interval_end.between(min(times), max(times)))
            for site_id, times in ends.items()
        )
    )


def prune(conn: Connection, sent_before: datetime, most: int) -> int:
    """Delete at most `most` readings sent before `sent_before`, the oldest first: their
    history kept that long. A refused reading stays, as the record of what Voltus refused."""
    t = telemetry_outbox.c
    old = select(t.id).where(t.sent_at < sent_before).order_by(t.sent_at).limit(most)
    return conn.execute(delete(telemetry_outbox).where(t.id.in_(old.scalar_subquery()))).rowcount


def set_aside(conn: Connection, lines: list[RejectedLine], now: datetime) -> int:
    """Keep each line that could not be queued, once (a file sent again brings it again): how
    many were new."""
    incoming = {}
    for line in lines:
        text = line.line[:LINE_CHARS]
        incoming[fingerprint(json.dumps([line.source, text]).encode())] = (line, text)
    r = telemetry_outbox_rejected.c
    known: set[str] = set()
    for chunk in chunks(incoming):
        known |= set(conn.execute(select(r.line_hash).where(r.line_hash.in_(chunk))).scalars())
    rows = [
        {
            "line_hash": line_hash,
            "source": line.source,
            "line_number": line.line_number,
            "line": text,
            "reason": line.reason,
            "rejected_at": now,
        }
        for line_hash, (line, text) in incoming.items()
        if line_hash not in known
    ]
    write_many(conn, telemetry_outbox_rejected.insert(), rows)
    return len(rows)


def _free(now: datetime) -> ColumnElement[bool]:
    """Readings still to send that no sender holds (nor holds back) now."""
    t = telemetry_outbox.c
    return and_(
        t.sent_at.is_(None),
        t.refused.is_(None),
        or_(t.sending_until.is_(None), t.sending_until < now),
    )


def sendable(conn: Connection, now: datetime) -> bool:
    """Whether a sender may take a reading now: held back ones wait their time."""
    t = telemetry_outbox.c
    return conn.execute(select(t.id).where(_free(now)).limit(1)).first() is not None


def claim(conn: Connection, now: datetime, hold: timedelta, most: int) -> list[Held]:
    """Up to `most` waiting readings of one endpoint that no sender holds, oldest first, now
    held until `now + hold`."""
    t = telemetry_outbox.c
    free = _free(now)
    first = conn.execute(select(t.endpoint).where(free).order_by(t.id).limit(1)).scalar()
    if first is None:
        return []
    rows = conn.execute(
        select(t.id, t.queued_at, *(t[name] for name in KEY), t.value)
        .where(free, t.endpoint == first)
        .order_by(t.id)
        .limit(most)
    ).all()
    ids = [row.id for row in rows]
    for chunk in chunks(ids):
        conn.execute(
            update(telemetry_outbox).where(t.id.in_(chunk)).values(sending_until=now + hold)
        )
    return [
        Held(
            row.id,
            row.queued_at,
            Queued(
                OutboxEndpoint(row.endpoint),
                row.site_id,
                row.meter_id,
                row.interval_end,
                row.interval_seconds,
                ReadingUnits(row.units),
                row.value,
            ),
        )
        for row in rows
    ]


def mark_sent(conn: Connection, held: list[Held], now: datetime) -> None:
    """Voltus answered 2xx to a request that held these readings: each is sent, unless it was
    corrected while the request was out (queued again with another value, so `queued_at` moved):
    that one is let go instead, for its new value to be sent next."""
    t = telemetry_outbox.c
    conn.execute(
        update(telemetry_outbox)
        .where(
            t.id == bindparam("held_id"),
            t.queued_at == bindparam("held_queued_at"),
            t.sent_at.is_(None),
        )
        .values(sent_at=now, sending_until=None),
        [{"held_id": h.id, "held_queued_at": h.queued_at} for h in held],
    )
    release(conn, [h.id for h in held])


def release(conn: Connection, ids: Iterable[int], until: datetime | None = None) -> None:
    """Let another sender take these readings at once, or from `until` on (a backoff): their
    request failed."""
    t = telemetry_outbox.c
    for chunk in chunks(ids):
        conn.execute(
            update(telemetry_outbox)
            .where(t.id.in_(chunk), t.sent_at.is_(None))
            .values(sending_until=until)
        )


def refuse(conn: Connection, held: Held, reason: str) -> None:
    """Voltus refused this reading alone: it is not sent again (a correction queues it anew)."""
    t = telemetry_outbox.c
    conn.execute(
        update(telemetry_outbox)
        .where(t.id == held.id, t.queued_at == held.queued_at, t.sent_at.is_(None))
        .values(refused=reason[:1000], sending_until=None)
    )


def waiting(conn: Connection) -> Waiting:
    """The readings still to send (not those Voltus refused), from the partial index."""
    t = telemetry_outbox.c
    count, oldest = conn.execute(
        select(func.count(), func.min(t.queued_at)).where(t.sent_at.is_(None), t.refused.is_(None))
    ).one()
    return Waiting(count, oldest)


def held_back(conn: Connection, beyond: datetime) -> HeldBack:
    """The readings still to send that no sender may take until after `beyond`."""
    t = telemetry_outbox.c
    count, until = conn.execute(
        select(func.count(), func.min(t.sending_until)).where(
            t.sent_at.is_(None), t.refused.is_(None), t.sending_until > beyond
        )
    ).one()
    return HeldBack(count, until)


def newest_readings(conn: Connection, site_ids: Iterable[str]) -> dict[str, datetime]:
    """The end of the newest reading queued for Voltus of each of these sites that has any (a
    site metered by Voltus itself has none): one look into the index per site."""
    t = telemetry_outbox.c
    newest = {}
    for site_id in site_ids:
        end = conn.execute(
            select(func.max(t.interval_end)).where(
                t.site_id == site_id, t.endpoint == OutboxEndpoint.TELEMETRY
            )
        ).scalar()
        if end is not None:
            newest[site_id] = end
    return newest
