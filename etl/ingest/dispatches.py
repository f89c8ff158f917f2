"""The fetch of dispatches, programs and sites: API records into the store, with an event for
every change observed.

A fetch reads the API first (the listing, then by id each dispatch that is missing from it before
its end), then writes in one transaction holding the fetch lock: it reads what is stored, works out
what changed with the pure functions of etl.ingest.diff (old row, new record -> rows and
events), and writes only that, with its fetch-run record.

The store never moves backwards: a fetch whose listing was requested before the listing of a fetch
already stored writes nothing but a `superseded` fetch-run record, and a dispatch whose
`modification_number` is lower than the stored one is ignored, with no event.

What did not change costs little: a response body identical to the last one stored is not even
parsed, and a dispatch whose fingerprint is unchanged is neither validated nor read nor written.
A failed fetch writes nothing but a `failed` fetch-run record, in a transaction of its own.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, or_, select, update

from etl.base.errors import ApiError, DatabaseError
from etl.base.payloads import Rejected
from etl.base.timeutil import format_rfc3339, jsonable, utcnow
from etl.base.vocabulary import EventKind, FetchKind, FetchOutcome, RecordKind
from etl.ingest import measures
from etl.ingest.diff import (
    DISPATCH_FIELDS,
    DISPATCH_SITE_COLUMNS,
    PROGRAM_COLUMNS,
    SITE_COLUMNS,
    Changes,
    answers_by_id,
    dispatch_change,
    id_of,
    program_change,
    rejected_events,
    site_change,
    split_duplicates,
)
from etl.source.api import Listing, VoltusClient
from etl.source.jsonscan import TooDeep
from etl.source.records import (
    Dispatch,
    SiteBatch,
    item_fingerprint,
    parse_dispatches,
    record_id,
)
from etl.store import binding, fetch_runs, set_aside
from etl.store.db import RecordRefused, read_transaction, record_savepoint, write_transaction
from etl.store.dispatch_sites import upsert_listed
from etl.store.events import NewEvent
from etl.store.events import append as append_events
from etl.store.fetch_runs import FETCH_LOCK
from etl.store.rows import Row, chunks, select_in, stored_rows, upsert
from etl.store.schema import dispatch_sites, dispatches, programs, sites

__all__ = ["FetchSummary", "Snapshot", "fetch", "fetch_dispatch", "ingest"]

DISPATCHES_AT_ONCE = 1000  # diffed and written together; their rows then let go


@dataclass
class FetchSummary:
    fetch_run_id: int
    dispatches_received: int
    dispatches_created: int
    dispatches_changed: int
    sites_received: int
    rejected: int
    events: list[NewEvent] = field(default_factory=list)
    outcome: FetchOutcome = FetchOutcome.SUCCEEDED
    note: str | None = None  # why a fetch was superseded
    dispatches_rejected: int = 0  # of the listing's items (`rejected` counts sites' too)
    kind: FetchKind = FetchKind.LISTING

    @property
    def dispatches_unchanged(self) -> int:
        changed = self.dispatches_created + self.dispatches_changed + self.dispatches_rejected
        return max(0, self.dispatches_received - changed)


@dataclass(frozen=True)
class Snapshot:
    """What the API said in one fetch: the listing (None for a lookup: a webhook's fetch of one
    dispatch), when it was asked for, each dispatch looked up by id (None: the API does not know
    it), and the sites if asked for."""

    listing: Listing | None
    requested_at: datetime
    looked_up: dict[str, Any | None]
    site_batch: SiteBatch | None
    lookup_of: str | None = None  # a lookup's dispatch, known to the API or not

    @property
    def kind(self) -> FetchKind:
        return FetchKind.LISTING if self.listing is not None else FetchKind.LOOKUP

    def without(self, dispatch_ids: set[str]) -> "Snapshot":
        """The snapshot less the answers by id about these dispatches."""
        looked_up = {d: item for d, item in self.looked_up.items() if d not in dispatch_ids}
        return replace(self, looked_up=looked_up)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused: a listing becomes hundreds of thousands of objects that
    live until the fetch ends, and in the meantime the collector walked them again and again (a
    tenth of a first load of 10,000 dispatches). Reference counting still frees what the fetch
    drops; cycles wait for the collector to run again after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def fetch(engine: Engine, client: VoltusClient, include_sites: bool = False) -> FetchSummary:
    """One ingestion pass. On any failure (API, database, interruption) the store is left as it
    was, a `failed` fetch run records why, and the error propagates."""
    with _collector_paused():
        return _fetch(engine, client, include_sites)


def _fetch(engine: Engine, client: VoltusClient, include_sites: bool) -> FetchSummary:
    started_at = utcnow()
    api = client.settings
    binding.check(engine, api.url, api.key)  # another account's store: refused, not recorded
    try:
        with read_transaction(engine) as conn:
            last = fetch_runs.last_listing(conn)
            not_ended = _not_ended(conn, utcnow())
        requested_at = utcnow()
        listing = client.dispatches()
        looked_up = _look_up_missing(client, listing, last, not_ended)
        site_batch = client.sites() if include_sites else None
        snapshot = Snapshot(listing, requested_at, looked_up, site_batch)
        try:
            with write_transaction(engine, FETCH_LOCK) as conn:
                binding.hold(conn, api)
                return ingest(conn, snapshot, started_at)
        except DatabaseError as error:
            if not error.refused:
                raise
        # the database refused something validation let through: record by record, this time
        with write_transaction(engine, FETCH_LOCK) as conn:
            binding.hold(conn, api)
            return ingest(conn, snapshot, started_at, one_by_one=True)
    except BaseException as error:
        fetch_runs.record_failure(engine, started_at, error, FetchKind.LISTING)
        raise


def fetch_dispatch(engine: Engine, client: VoltusClient, dispatch_id: str) -> FetchSummary:
    """A lookup: one dispatch fetched by id (a webhook named it) and ingested as a listed one
    would be, with the same events and the same guards against older answers. A dispatch the
    API does not know is left to the next listing, which alone decides that one vanished."""
    started_at = utcnow()
    api = client.settings
    binding.check(engine, api.url, api.key)
    try:
        requested_at = utcnow()
        answer = client.dispatch(dispatch_id)
        looked_up = {} if answer is None else {dispatch_id: answer}
        snapshot = Snapshot(None, requested_at, looked_up, None, lookup_of=dispatch_id)
        with write_transaction(engine, FETCH_LOCK) as conn:
            binding.hold(conn, api)
            return ingest(conn, snapshot, started_at)
    except BaseException as error:
        fetch_runs.record_failure(engine, started_at, error, FetchKind.LOOKUP)
        raise


def _not_ended(conn: Connection, now: datetime) -> dict[str, Any]:
    """Dispatches that have not ended (held, still to start, or cancelled but able to be
    authorized again), by id, with their end time and when they went missing from the listing:
    a few rows, from the index on (authorized, end_time), hence the condition on `authorized`."""
    rows = conn.execute(
        select(dispatches.c.id, dispatches.c.end_time, dispatches.c.missing_since).where(
            dispatches.c.authorized.in_([True, False]),
            or_(dispatches.c.end_time.is_(None), dispatches.c.end_time > now),
        )
    ).all()
    return {row.id: row for row in rows}


def _listed_ids(items: list[Any]) -> set[str]:
    """The ids the listing names, a record too deep to read included: it is listed, not missing."""
    deep = {item.id for item in items if isinstance(item, TooDeep) and item.id is not None}
    return deep | {item_id for item_id in map(id_of, items) if item_id is not None}


def _look_up_missing(
    client: VoltusClient, listing: Listing, last: fetch_runs.LastListing, not_ended: dict[str, Any]
) -> dict[str, Any | None]:
    """Leaving the listing is not a cancellation: each dispatch not ended and missing from it is
    asked for by id. With a body unchanged since the last fetch, only those already known to be
    missing are. When the API fails to answer, the rest wait for the next fetch: a cron run
    must not spend its retries on each of them."""
    if listing.fingerprint == last.fingerprint:
        wanted = [d for d, row in not_ended.items() if row.missing_since is not None]
    else:
        listed = _listed_ids(listing.items)
        wanted = [d for d in not_ended if d not in listed]
    looked_up = {}
    for dispatch_id in sorted(wanted):
        try:
            looked_up[dispatch_id] = client.dispatch(dispatch_id)
        except ApiError:
            break
    return looked_up


def ingest(
    conn: Connection, snapshot: Snapshot, started_at: datetime, one_by_one: bool = False
) -> FetchSummary:
    """Write what changed; the caller holds the fetch lock, so what is read here stays true.
    `one_by_one` writes each record in a savepoint of its own, setting aside those the database
    refuses: slower, for when writing them all at once failed."""
    now = utcnow()
    last = fetch_runs.last_listing(conn)
    newer = fetch_runs.looked_up_since(conn, snapshot.requested_at)
    if last.requested_at is not None and last.requested_at > snapshot.requested_at:
        return _superseded(conn, snapshot, last.requested_at, started_at)
    if snapshot.lookup_of in newer:
        return _superseded(conn, snapshot, None, started_at)
    # a lookup asked for after this answer keeps its dispatch; the rest of the answer applies
    snapshot = snapshot.without(newer)
    listing = snapshot.listing
    same_body = listing is not None and listing.fingerprint == last.fingerprint
    items = listing.items if listing is not None and not same_body else []
    unique_items, duplicates = split_duplicates(items)
    found, mismatched = answers_by_id(snapshot.looked_up)
    applied = [item for item in unique_items if id_of(item) not in newer]
    candidates, rejected, fingerprints = _changed_dispatches(conn, [*applied, *found])
    rejected = duplicates + rejected + mismatched
    if snapshot.site_batch:
        rejected += snapshot.site_batch.rejected

    changes = Changes()
    if one_by_one:
        rejected += _store_one_by_one(
            conn, candidates, snapshot.site_batch, fingerprints, now, changes
        )
    else:
        _store(conn, candidates, snapshot.site_batch, fingerprints, now, changes)
    changes.rejected = set_aside.unseen(conn, rejected, now)
    changes.events += rejected_events(changes.rejected)
    _end_vanished(conn, snapshot, now, changes)
    if snapshot.site_batch is not None:
        _note_listed_sites(conn, snapshot.site_batch, snapshot.requested_at)

    if listing is None:
        received = len(found)
    else:
        received = last.dispatches_received if same_body else len(items)
    run = fetch_runs.new_row(
        started_at,
        FetchOutcome.SUCCEEDED,
        snapshot.kind,
        listing_requested_at=snapshot.requested_at,
        dispatches_received=received,
        dispatches_created=changes.created,
        dispatches_changed=changes.changed,
        sites_received=len(snapshot.site_batch.sites) if snapshot.site_batch else 0,
        rejected=last.rejected if same_body else len(rejected),
        events=len(changes.events),
        body_fingerprint=listing.fingerprint if listing is not None else None,
        clock_offset_seconds=listing.clock_offset if listing is not None else None,
        dispatch_id=snapshot.lookup_of,
    )
    run_id = fetch_runs.add(conn, run)
    set_aside.add(conn, changes.rejected, run_id)
    if listing is not None and not same_body:
        _note_missing(conn, _listed_ids(items) | newer, snapshot.requested_at, now)
    append_events(conn, changes.events, now, run_id)
    return FetchSummary(
        kind=snapshot.kind,
        fetch_run_id=run_id,
        dispatches_received=received,
        dispatches_created=changes.created,
        dispatches_changed=changes.changed,
        sites_received=run["sites_received"],
        rejected=run["rejected"],
        events=changes.events,
        # the same body as last time: as many as then
        dispatches_rejected=run["rejected"]
        if same_body
        else sum(r.kind == "dispatch" for r in rejected),
    )


def _store(
    conn: Connection,
    candidates: list[Dispatch],
    site_batch: SiteBatch | None,
    fingerprints: dict[str, str],
    now: datetime,
    changes: Changes,
) -> None:
    """Diff the records with what is stored and write what changed: the programs and sites,
    then the dispatches DISPATCHES_AT_ONCE at a time, so that a first load's rows are never all
    in memory at once (they were a third of its peak). Their events and counts are added to
    `changes` once all is written."""
    part = Changes()
    stored_programs = _diff_programs(conn, candidates, now, part)
    stored_sites = _diff_sites(conn, candidates, site_batch, now, part)
    upsert(conn, programs, part.programs, ["id"], stored_programs)
    upsert(conn, sites, part.sites, ["id"], stored_sites)
    # a site GET /sites lists anew (its meters, say): its load is another sum, measured again
    listed_anew = [row["id"] for row in part.sites if "meters" in row]
    measures.forget_sites(conn, listed_anew, now - measures.RELISTED_WITHIN)
    for chunk in chunks(candidates, DISPATCHES_AT_ONCE):
        # each dispatch's rows are its own: what one chunk writes, no later chunk reads
        written = Changes()
        stored_dispatches, stored_listed = _diff_dispatches(conn, chunk, fingerprints, now, written)
        upsert(conn, dispatches, written.dispatches, ["id"], stored_dispatches)
        upsert_listed(conn, written.dispatch_sites, stored_listed)
        part.add_written(written)
    changes.add_written(part)


def _store_one_by_one(
    conn: Connection,
    candidates: list[Dispatch],
    site_batch: SiteBatch | None,
    fingerprints: dict[str, str],
    now: datetime,
    changes: Changes,
) -> list[Rejected]:
    """Each dispatch (and each site of /sites) in a savepoint of its own: one that the database
    refuses is set aside with the database's reason, and the others are stored."""
    refused = []
    for dispatch in candidates:
        try:
            with record_savepoint(conn):
                _store(conn, [dispatch], None, fingerprints, now, changes)
        except RecordRefused as error:
            reason = f"dispatch: the database refused it: {error}"
            refused.append(Rejected(RecordKind.DISPATCH, dispatch.id, reason, dispatch.raw))
    for site in site_batch.sites if site_batch else []:
        try:
            with record_savepoint(conn):
                _store(conn, [], SiteBatch([site], []), fingerprints, now, changes)
        except RecordRefused as error:
            reason = f"site: the database refused it: {error}"
            refused.append(
                Rejected(RecordKind.SITE, site.id, reason, {"id": site.id, "name": site.name})
            )
    records = len(candidates) + (len(site_batch.sites) if site_batch else 0)
    if len(refused) >= 2 and len(refused) == records:
        # not the records but the database (full, read-only, permissions): a failed fetch, not
        # a store emptied of what the API says
        raise DatabaseError(f"the database refused every record: {refused[0].reason}")
    return refused


def _superseded(
    conn: Connection, snapshot: Snapshot, listed_since: datetime | None, started_at: datetime
) -> FetchSummary:
    """Nothing written but the record of why: an answer older than the last listing stored
    (`listed_since`), or a lookup older than another one of its dispatch."""
    stored = "listing" if listed_since is not None else "lookup of its dispatch"
    asked = f", requested at {format_rfc3339(listed_since)}" if listed_since is not None else ""
    note = (
        f"its {snapshot.kind}, requested at {format_rfc3339(snapshot.requested_at)}, is older "
        f"than the stored {stored}{asked}: nothing written"
    )
    row = fetch_runs.new_row(
        started_at,
        FetchOutcome.SUPERSEDED,
        snapshot.kind,
        listing_requested_at=snapshot.requested_at,
        error=note,
        body_fingerprint=snapshot.listing.fingerprint if snapshot.listing else None,
        dispatch_id=snapshot.lookup_of,
    )
    run_id = fetch_runs.add(conn, row)
    return FetchSummary(
        run_id, 0, 0, 0, 0, 0, outcome=FetchOutcome.SUPERSEDED, note=note, kind=snapshot.kind
    )


def _changed_dispatches(
    conn: Connection, items: list[Any]
) -> tuple[list[Dispatch], list[Rejected], dict[str, str]]:
    """The dispatches new or changed since stored, validated; the malformed ones set aside; and
    the items' fingerprints. An item whose fingerprint is the stored one is skipped unvalidated:
    it was valid then."""
    # only ids the store can hold are looked up: a NUL in a query fails on PostgreSQL
    fingerprints = {
        item["id"]: item_fingerprint(item)
        for item in items
        if isinstance(item, dict) and record_id(item)
    }
    stored = dict(select_in(conn, [dispatches.c.id, dispatches.c.content_hash], fingerprints))

    def unchanged(item: Any) -> bool:
        item_id = id_of(item)
        return item_id in stored and stored[item_id] == fingerprints[item_id]

    batch = parse_dispatches([item for item in items if not unchanged(item)])
    return batch.dispatches, batch.rejected, fingerprints


# -- reading what is stored, and applying the pure part to it ---------------------------------


def _diff_programs(
    conn: Connection, candidates: list[Dispatch], now: datetime, changes: Changes
) -> set[int]:
    """Add the programs' changes; return the ids of those stored."""
    incoming = {d.program.id: d.program for d in candidates}
    stored = stored_rows(conn, programs, incoming, PROGRAM_COLUMNS)
    for program_id, program in incoming.items():
        row, events = program_change(stored.get(program_id), program, now)
        if row is not None:
            changes.programs.append(row)
            changes.events += events
    return set(stored)


def _diff_sites(
    conn: Connection,
    candidates: list[Dispatch],
    site_batch: SiteBatch | None,
    now: datetime,
    changes: Changes,
) -> set[str]:
    """Add the sites' changes; return the ids of those stored."""
    incoming: dict[str, Row] = {}
    for dispatch in candidates:
        for site in dispatch.sites:
            incoming[site.id] = {
                "name": site.name,
                "customer_location_id": site.customer_location_id,
            }
    for listed in site_batch.sites if site_batch else []:
        incoming[listed.id] = {
            "name": listed.name,
            "customer_location_id": listed.customer_location_id,
            "meters": [
                {"id": m.id, "name": m.name, "asset_type": m.asset_type} for m in listed.meters
            ],
        }
    stored = stored_rows(conn, sites, incoming, SITE_COLUMNS)
    for site_id, fields in incoming.items():
        row, events = site_change(stored.get(site_id), site_id, fields, now)
        if row is not None:
            changes.sites.append(row)
            changes.events += events
    return set(stored)


def _diff_dispatches(
    conn: Connection,
    candidates: list[Dispatch],
    fingerprints: dict[str, str],
    now: datetime,
    changes: Changes,
) -> tuple[set[str], set[tuple[str, str]]]:
    """Add the dispatches' changes; return the ids of those stored, and the (dispatch id, site
    id) of their sites stored."""
    by_id = {d.id: d for d in candidates}
    stored = stored_rows(conn, dispatches, by_id, [*DISPATCH_FIELDS, "raw"])
    stored_sites: dict[str, dict[str, Row]] = {}
    site_columns = [dispatch_sites.c[c] for c in DISPATCH_SITE_COLUMNS]
    for row in select_in(conn, site_columns, by_id):
        stored_sites.setdefault(row.dispatch_id, {})[row.site_id] = row._asdict()
    for dispatch in candidates:
        old = stored.get(dispatch.id)
        old_sites = stored_sites.get(dispatch.id, {})
        change = dispatch_change(old, old_sites, dispatch, fingerprints[dispatch.id], now)
        if change is None:
            continue
        changes.created += old is None
        changes.changed += old is not None
        changes.dispatches.append(change.row)
        changes.dispatch_sites += change.site_rows
        changes.events += change.events
    listed = {(d, site) for d, rows in stored_sites.items() for site in rows}
    return set(stored), listed


def _end_vanished(conn: Connection, snapshot: Snapshot, now: datetime, changes: Changes) -> None:
    """A dispatch missing from the listing that the API no longer knows by id ended when it went
    missing. Its fingerprint is forgotten, so that should the API send it again, it is applied."""
    gone = [d for d, item in snapshot.looked_up.items() if item is None]
    if not gone:
        return
    for dispatch_id, row in _not_ended(conn, now).items():
        if dispatch_id not in gone:
            continue
        end_time = row.end_time
        missing_since = row.missing_since or snapshot.requested_at
        ended_at = min(end_time, missing_since) if end_time is not None else missing_since
        conn.execute(
            update(dispatches)
            .where(dispatches.c.id == dispatch_id)
            .values(end_time=ended_at, missing_since=missing_since, content_hash="", updated_at=now)
        )
        details = {
            "end_time": {"old": jsonable(end_time), "new": jsonable(ended_at)},
            "reason": "missing from the listing, and unknown to the API by id",
        }
        changes.events.append(
            NewEvent(EventKind.DISPATCH_VANISHED, details, dispatch_id=dispatch_id)
        )


def _note_listed_sites(conn: Connection, batch: SiteBatch, requested_at: datetime) -> None:
    """Record since when GET /sites has listed each site (those set aside too: they are listed,
    only malformed), and since when it has not listed a stored site. An answer like the last
    one writes nothing."""
    listed = {site.id for site in batch.sites} | {r.record_id for r in batch.rejected}
    listed.discard(None)
    s = sites.c
    for chunk in chunks(listed):
        conn.execute(
            update(sites)
            .where(s.id.in_(chunk), or_(s.listed_since.is_(None), s.unlisted_since.is_not(None)))
            .values(listed_since=requested_at, unlisted_since=None)
        )
    known = conn.execute(select(s.id).where(s.unlisted_since.is_(None))).scalars()
    for chunk in chunks(set(known) - listed):
        conn.execute(update(sites).where(s.id.in_(chunk)).values(unlisted_since=requested_at))


def _note_missing(
    conn: Connection, listed: set[str], requested_at: datetime, now: datetime
) -> None:
    """Record when each dispatch not ended went missing from the listing, and forget it when it
    is back."""
    for dispatch_id, row in _not_ended(conn, now).items():
        if dispatch_id in listed and row.missing_since is not None:
            value = None
        elif dispatch_id not in listed and row.missing_since is None:
            value = requested_at
        else:
            continue
        conn.execute(
            update(dispatches).where(dispatches.c.id == dispatch_id).values(missing_since=value)
        )
