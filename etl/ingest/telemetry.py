"""Telemetry: each dispatched site's metered load around each dispatch, the record that the load
did drop, and when.

A dispatch's window is (start - 60 min, end + 30 min]. It is fetched once the dispatch has been
over for 20 minutes, up to 20 minutes ago only (Voltus's readings of recent intervals may still
be incomplete), for dispatches up to `lookback` old, and again while the store lacks an interval
of it: a later fetch fills the gaps, and says so. Once a window has been asked for whole (all of
it settled), it is asked again an hour later, then at doubling intervals of at most 12 hours: a
meter that never reports, or a gap that stays, costs a few requests, not one at every pass.
Requests keep to the API's limits: 10 sites, times aligned to 30 s, at most 10,000 points per
site.

One window's failure does not cost the others: a window whose request the API refuses (a site it
no longer knows, say) is asked again later, as an incomplete one is, while the rest go on, and
the refusal is kept with the window's last ask until an ask is answered, so that `etl status`
warns for as long as it lasts; when the API cannot be reached or refuses the key, the pass stops
there. What was fetched is stored either way, and the run is recorded as failed with the first
error.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, String, and_, column, func, select, values

from etl.base.errors import ApiError
from etl.base.payloads import Rejected
from etl.base.timeutil import format_rfc3339, utcnow
from etl.base.vocabulary import EventKind, FetchKind, FetchOutcome, RecordKind
from etl.ingest.diff import rejected_events
from etl.ingest.measures import forget_read, measure_due
from etl.source.api import VoltusClient
from etl.source.records import Reading
from etl.store import fetch_runs, set_aside
from etl.store.db import dialect_insert, read_transaction, write_transaction
from etl.store.events import NewEvent
from etl.store.events import append as append_events
from etl.store.fetch_runs import FETCH_LOCK
from etl.store.rows import chunks, upsert
from etl.store.schema import (
    BASELINE_BEFORE,
    TELEMETRY_INTERVAL,
    UTCDateTime,
    dispatch_sites,
    dispatches,
    telemetry,
    telemetry_requests,
)

__all__ = [
    "AFTER",
    "DEFAULT_LOOKBACK",
    "MOST_REJECTED",
    "TelemetrySummary",
    "Window",
    "fetch_telemetry",
    "reask_at",
    "windows_due",
]

AFTER = timedelta(minutes=30)  # after a dispatch's end, the readings fetched
SETTLE = timedelta(minutes=20)  # after an interval, before its readings are trusted
MAX_SITES, MAX_POINTS = 10, 10_000  # per request, per site
MOST_REJECTED = 100  # readings of one window set aside one by one; beyond, counted in one
ALIGN = 30  # seconds
DEFAULT_LOOKBACK = timedelta(days=7)
# a window asked for whole and still lacking readings is asked again this long after, doubling
REASK_FIRST, REASK_MAX = timedelta(hours=1), timedelta(hours=12)
# statuses of an ApiError that every other request would meet too (None: no answer at all)
FAILS_EVERY_REQUEST = (None, 401, 403)
# of a pass, spent measuring what its readings made due: a 5,000-site dispatch takes 5 to 20 s
MEASURE_SECONDS = 120.0
# readings written in one transaction, about a second on SQLite: a 5,000-site dispatch's 1.5
# million in one held SQLite's only write lock for half a minute, and the processor's claims
# and outcomes, waiting for it, would have failed after LOCK_TIMEOUT_SECONDS
TRANSACTION_READINGS = 50_000


@dataclass(frozen=True)
class Window:
    """The intervals of one dispatch's telemetry, (start, end], for its sites that lack some."""

    dispatch_id: str
    start: datetime
    end: datetime
    site_ids: tuple[str, ...]

    @property
    def intervals(self) -> int:
        """How many intervals end in (start, end]."""
        return (
            int(self.end.timestamp()) // TELEMETRY_INTERVAL
            - int(self.start.timestamp()) // TELEMETRY_INTERVAL
        )


@dataclass
class TelemetrySummary:
    fetch_run_id: int
    windows: int
    requests: int
    readings_new: int = 0
    readings_changed: int = 0
    rejected: int = 0
    events: list[NewEvent] = field(default_factory=list)
    failed_windows: int = 0  # due but not fetched: refused, or after the API failed
    error: str | None = None  # the first failure
    measured: int = 0  # (dispatch, site) pairs measured (etl.ingest.measures)
    measures_due: int = 0  # left due when the pass's time to measure was spent


def _aligned(moment: datetime, up: bool) -> datetime:
    seconds = moment.timestamp()
    step = -(-seconds // ALIGN) if up else seconds // ALIGN
    return datetime.fromtimestamp(step * ALIGN, UTC)


def reask_at(asked_at: datetime, asks: int) -> datetime:
    """When a window asked for whole `asks` times and still lacking readings is asked again."""
    # the exponent is bounded too: a count in the thousands would overflow a timedelta
    return asked_at + min(REASK_FIRST * 2 ** min(asks - 1, 4), REASK_MAX)


def windows_due(conn: Connection, now: datetime, lookback: timedelta) -> list[Window]:
    """The windows of the authorized, non-test dispatches that ended between `lookback` and
    SETTLE ago, each with the sites whose readings are not all stored and that are not waiting
    to be asked again."""
    d, ds, asked = dispatches.c, dispatch_sites.c, telemetry_requests.c
    rows = conn.execute(
        select(d.id, d.start_time, d.end_time, ds.site_id, asked.asked_at, asked.asks)
        .join(dispatch_sites, ds.dispatch_id == d.id)
        .outerjoin(
            telemetry_requests,
            and_(asked.dispatch_id == ds.dispatch_id, asked.site_id == ds.site_id),
        )
        .where(
            d.authorized.is_(True),
            d.test.is_(False),
            d.end_time > now - lookback,
            d.end_time <= now - SETTLE,
            ds.removed_at.is_(None),
        )
        .order_by(d.start_time, d.id, ds.site_id)
    ).all()
    sites: dict[tuple[str, datetime, datetime], list[str]] = {}
    for row in rows:
        if row.asked_at is not None and now < reask_at(row.asked_at, row.asks):
            continue
        start = _aligned(row.start_time - BASELINE_BEFORE, up=False)
        end = _aligned(row.end_time + AFTER, up=True)
        sites.setdefault((row.id, start, end), []).append(row.site_id)
    stored = _stored_counts(conn, sites)
    windows = []
    for (dispatch_id, start, end), site_ids in sites.items():
        window = Window(dispatch_id, start, end, tuple(site_ids))
        lacking = tuple(s for s in site_ids if stored[(dispatch_id, s)] < window.intervals)
        if lacking:
            windows.append(Window(dispatch_id, start, end, lacking))
    return windows


def _stored_counts(
    conn: Connection, sites: dict[tuple[str, datetime, datetime], list[str]]
) -> dict[tuple[str, str], int]:
    """Intervals stored (of any meter) per dispatch and site in its window: one query for every
    window, a chunk of (dispatch, site, start, end) rows at a time."""
    pairs = [(d, s, start, end) for (d, start, end), ids in sites.items() for s in ids]
    counts: dict[tuple[str, str], int] = {}
    for chunk in chunks(pairs):
        wanted = values(
            column("dispatch_id", String),
            column("site_id", String),
            column("starts", UTCDateTime),
            column("ends", UTCDateTime),
            name="wanted",
        ).data(chunk)
        w, t = wanted.cte("wanted").c, telemetry.c
        in_window = and_(
            t.site_id == w.site_id,
            t.interval_seconds == TELEMETRY_INTERVAL,
            t.interval_end > w.starts,
            t.interval_end <= w.ends,
        )
        stored = func.count(t.interval_end.distinct()).label("stored")
        query = (
            select(w.dispatch_id, w.site_id, stored)
            .outerjoin(telemetry, in_window)
            .group_by(w.dispatch_id, w.site_id)
        )
        counts |= {(row.dispatch_id, row.site_id): row.stored for row in conn.execute(query)}
    return counts


def _not_asked_for(
    reading: Reading, site_ids: list[str], start: datetime, end: datetime
) -> str | None:
    """Why a reading is not an answer to the request (site_ids, start, end), or None: an
    interval of another site, width, or time, or one that ends off the interval's grid."""
    if reading.site_id not in site_ids:
        return f"telemetry: site {reading.site_id!r} was not asked for"
    if reading.interval_seconds != TELEMETRY_INTERVAL:
        asked = TELEMETRY_INTERVAL
        return f"telemetry: a {reading.interval_seconds} s interval, not the {asked} s asked for"
    if not start < reading.interval_end <= end:
        return (
            f"telemetry: an interval ending at {format_rfc3339(reading.interval_end)}, outside "
            f"the window asked for ({format_rfc3339(start)}, {format_rfc3339(end)}]"
        )
    if reading.interval_end.timestamp() % TELEMETRY_INTERVAL:
        return (
            f"telemetry: an interval ending at {format_rfc3339(reading.interval_end)}, off the "
            f"{TELEMETRY_INTERVAL} s grid"
        )
    return None


def requests_for(window: Window, until: datetime) -> Iterator[tuple[list[str], datetime, datetime]]:
    """(sites, start, end) of each request for the window's intervals that end by `until`: 10
    sites at most, and spans short enough to keep within the point limit."""
    longest = timedelta(seconds=MAX_POINTS * TELEMETRY_INTERVAL)
    last = min(window.end, until)
    for first in range(0, len(window.site_ids), MAX_SITES):
        site_ids = list(window.site_ids[first : first + MAX_SITES])
        start = window.start
        while start < last:
            end = min(start + longest, last)
            yield site_ids, start, end
            start = end


def fetch_telemetry(
    engine: Engine, client: VoltusClient, lookback: timedelta = DEFAULT_LOOKBACK
) -> TelemetrySummary:
    """One telemetry pass: the windows due, fetched, and stored in a transaction a part (see
    _Fetched.parts; one for most passes), with the first error and the count of failed
    windows, if any failed; the summary names the last part's fetch run."""
    started_at = utcnow()
    try:
        with read_transaction(engine) as conn:
            due = windows_due(conn, started_at, lookback)
        until = _aligned(started_at - SETTLE, up=False)
        fetched = _Fetched()
        for index, window in enumerate(due):
            try:
                fetched.add(window, client, until)
            except ApiError as error:
                fetched.error = (
                    fetched.error or f"telemetry of dispatch {window.dispatch_id}: {error}"
                )
                if error.status in FAILS_EVERY_REQUEST:
                    fetched.failed += len(due) - index
                    break
                fetched.failed += 1
                fetched.answered(window, until, refused=str(error))  # asked all the same
        summaries = []
        for part in fetched.parts(TRANSACTION_READINGS):
            with write_transaction(engine, FETCH_LOCK) as conn:
                summaries.append(_store(conn, part, started_at))
        summary = _combined(summaries, len(fetched.windows))
        # after the readings are committed, in transactions of their own: what is due stays
        # due until measured, through a crash or a budget spent
        ended_since = started_at - lookback
        summary.measured, summary.measures_due = measure_due(engine, ended_since, MEASURE_SECONDS)
        return summary
    except BaseException as error:
        fetch_runs.record_failure(engine, started_at, error, FetchKind.TELEMETRY)
        raise


@dataclass
class _Fetched:
    """What a pass got: the windows fetched whole, their readings and rejected readings; and
    how many it did not get, with the first error."""

    windows: list[Window] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    error: str | None = None
    # asked for whole, each with the API's refusal (None: it answered)
    asked: list[tuple[Window, str | None]] = field(default_factory=list)

    def add(self, window: Window, client: VoltusClient, until: datetime) -> None:
        """Fetch one window, keeping nothing of it unless every request succeeds."""
        readings, rejected = [], []
        for site_ids, start, end in requests_for(window, until):
            batch = client.telemetry(site_ids, start, end, TELEMETRY_INTERVAL)
            self.requests += 1
            for reading in batch.readings:
                reason = _not_asked_for(reading, site_ids, start, end)
                if reason is None:
                    readings.append(reading)
                else:
                    rejected.append(Rejected(RecordKind.TELEMETRY, None, reason, repr(reading)))
            rejected += batch.rejected
        if len(rejected) > MOST_REJECTED:  # a response of junk is one record, not thousands
            reason = f"telemetry: {len(rejected) - MOST_REJECTED} more readings set aside"
            rejected[MOST_REJECTED:] = [
                Rejected(RecordKind.TELEMETRY, None, reason, rejected[-1].reason)
            ]
        self.windows.append(window)
        self.readings += readings
        self.rejected += rejected
        self.answered(window, until)

    def answered(self, window: Window, until: datetime, refused: str | None = None) -> None:
        """Count the window as asked for, if the ask covered all of it: one not yet settled
        is asked again at the next pass."""
        if until >= window.end:
            self.asked.append((window, refused))

    def parts(self, most_readings: int) -> list["_Fetched"]:
        """The pass in parts of whole sites, each of about `most_readings` readings at most
        (unless one site has more), to be stored in a transaction of its own with a fetch run
        of its own: a part holds its sites' readings, windows and asks, so that a crash between
        parts loses nothing and asks again only for the sites of the parts not stored. The last
        part carries what is the pass's: its requests, the readings set aside, the windows not
        fetched and the first error (which `etl status` reads on the last run)."""
        by_site: dict[str, list[Reading]] = {}
        for reading in self.readings:
            by_site.setdefault(reading.site_id, []).append(reading)
        groups: list[set[str]] = [set()]
        placed: set[str] = set()
        count = 0
        for site_id in (s for window in self.windows for s in window.site_ids):
            if site_id in placed:  # a site of two windows, two dispatches: one part for both
                continue
            readings = len(by_site.get(site_id, ()))
            if count and count + readings > most_readings:
                groups.append(set())
                count = 0
            groups[-1].add(site_id)
            placed.add(site_id)
            count += readings
        if len(groups) == 1:
            return [self]
        parts = [self._of(group) for group in groups]
        last = parts[-1]
        last.requests, last.failed, last.error = self.requests, self.failed, self.error
        last.rejected = self.rejected
        fetched = set(map(id, self.windows))
        last.asked += [
            (window, refused) for window, refused in self.asked if id(window) not in fetched
        ]
        return parts

    def _of(self, site_ids: set[str]) -> "_Fetched":
        """The readings, windows and asks of these sites alone."""

        def narrowed(window: Window) -> Window:
            return replace(window, site_ids=tuple(s for s in window.site_ids if s in site_ids))

        windows = {id(w): narrowed(w) for w in self.windows}
        return _Fetched(
            windows=[w for w in windows.values() if w.site_ids],
            readings=[r for r in self.readings if r.site_id in site_ids],
            asked=[
                (windows[id(window)], refused)
                for window, refused in self.asked
                if id(window) in windows and windows[id(window)].site_ids
            ],
        )


def _combined(parts: list[TelemetrySummary], windows: int) -> TelemetrySummary:
    """One summary of a pass stored in parts: the last part's run and what it carries."""
    last = parts[-1]
    return replace(
        last,
        windows=windows,
        readings_new=sum(p.readings_new for p in parts),
        readings_changed=sum(p.readings_changed for p in parts),
        events=[event for p in parts for event in p.events],
    )


def _store(conn: Connection, fetched: _Fetched, started_at: datetime) -> TelemetrySummary:
    """Write the readings new or changed, the rejected ones, and the events; then the fetch run
    that they point to, with its counts (failed, with the first error, when a window failed)."""
    now = utcnow()
    error = f"{fetched.error} ({fetched.failed} windows not fetched)" if fetched.error else None
    kept = set_aside.unseen(conn, fetched.rejected, now)
    rows = {
        (r.site_id, r.meter_id, r.interval_end, r.interval_seconds): r.kw for r in fetched.readings
    }
    stored = _stored_values(conn, fetched.windows, list(rows))
    written: list[dict[str, Any]] = [
        {
            "site_id": site_id,
            "meter_id": meter_id,
            "interval_end": interval_end,
            "interval_seconds": interval_seconds,
            "kw": kw,
            "fetched_at": now,
        }
        for (site_id, meter_id, interval_end, interval_seconds), kw in rows.items()
        if stored.get((site_id, meter_id, interval_end, interval_seconds)) != kw
    ]
    received = _received(fetched.windows, written, stored)
    events = rejected_events(kept) + [
        NewEvent(EventKind.TELEMETRY_RECEIVED, details, dispatch_id, site_id)
        for (dispatch_id, site_id), details in received.items()
    ]
    run = fetch_runs.new_row(
        started_at,
        FetchOutcome.FAILED if error else FetchOutcome.SUCCEEDED,
        FetchKind.TELEMETRY,
        rejected=len(fetched.rejected),
        events=len(events),
        sites_received=sum(len(w.site_ids) for w in fetched.windows),
        error=error,
    )
    run_id = fetch_runs.add(conn, run)
    keys = ["site_id", "meter_id", "interval_end", "interval_seconds"]
    upsert(conn, telemetry, [{**row, "fetch_run_id": run_id} for row in written], keys, stored)
    set_aside.add(conn, kept, run_id)
    _record_asks(conn, fetched.asked, started_at)
    append_events(conn, events, now, run_id)
    forget_read(conn, [(row["site_id"], row["interval_end"]) for row in written])
    changed = sum(tuple(row[k] for k in keys) in stored for row in written)
    return TelemetrySummary(
        run_id,
        len(fetched.windows),
        fetched.requests,
        readings_new=len(written) - changed,
        readings_changed=changed,
        rejected=len(fetched.rejected),
        events=events,
        failed_windows=fetched.failed,
        error=error,
    )


def _record_asks(
    conn: Connection, asked: list[tuple[Window, str | None]], asked_at: datetime
) -> None:
    if not asked:
        return
    statement = dialect_insert(conn, telemetry_requests)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["dispatch_id", "site_id"],
        set_={
            "asked_at": excluded.asked_at,
            "asks": telemetry_requests.c.asks + 1,
            "refused": excluded.refused,
        },
    )
    rows = [
        {
            "dispatch_id": window.dispatch_id,
            "site_id": site_id,
            "asked_at": asked_at,
            "asks": 1,
            "refused": refused,
        }
        for window, refused in asked
        for site_id in window.site_ids
    ]
    conn.execute(statement, rows)


def _stored_values(
    conn: Connection, windows: list[Window], keys: list[tuple[str, str, datetime, int]]
) -> dict[tuple[str, str, datetime, int], float]:
    """The stored value of each of these readings, read window by window, a chunk of its sites
    at a time, through the index by site and time: an IN list of the keys themselves, four
    columns each, cost SQLAlchemy more to compile than the database to answer (6 s of a 1,000-site
    window's 10 s on SQLite). Every reading fetched is of a window fetched."""
    wanted = set(keys)
    t = telemetry.c
    found: dict[tuple[str, str, datetime, int], float] = {}
    for window in windows:
        for site_ids in chunks(window.site_ids):
            for row in conn.execute(
                select(t.site_id, t.meter_id, t.interval_end, t.interval_seconds, t.kw).where(
                    t.site_id.in_(site_ids),
                    t.interval_end > window.start,
                    t.interval_end <= window.end,
                )
            ):
                key = (row.site_id, row.meter_id, row.interval_end, row.interval_seconds)
                if key in wanted:
                    found[key] = row.kw
    return found


def _received(
    windows: list[Window],
    written: list[dict[str, Any]],
    stored: dict[tuple[str, str, datetime, int], float],
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (dispatch, site) whose window got readings new or changed: how many, and whether
    they filled gaps in readings already stored (its `telemetry_received` event's details)."""
    new_ends: dict[str, list[datetime]] = {}
    for row in written:
        new_ends.setdefault(row["site_id"], []).append(row["interval_end"])
    had_ends: dict[str, list[datetime]] = {}
    for site_id, _meter, interval_end, _width in stored:
        had_ends.setdefault(site_id, []).append(interval_end)
    received = {}
    for window in windows:
        for site_id in window.site_ids:
            new = sum(window.start < at <= window.end for at in new_ends.get(site_id, []))
            if not new:
                continue
            had = any(window.start < at <= window.end for at in had_ends.get(site_id, []))
            received[(window.dispatch_id, site_id)] = {"readings": new, "filled_gaps": had}
    return received
