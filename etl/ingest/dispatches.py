"""Ingestion: API records into the store, with an event for every change observed.

A fetch reads the API first (the listing, then by id each dispatch that is missing from it before
its end), then writes in one transaction holding the fetch lock: it reads what is stored, works out
what changed with the pure functions `program_change`, `site_change` and `dispatch_change` (old
row, new record -> rows and events), and writes only that, with its fetch-run record.

The store never moves backwards: a fetch whose listing was requested before the listing of a fetch
already stored writes nothing but a `superseded` fetch-run record, and a dispatch whose
`modification_number` is lower than the stored one is ignored, with no event.

What did not change costs little: a response body identical to the last one stored is not even
parsed, and a dispatch whose fingerprint is unchanged is neither validated nor read nor written.
A failed fetch writes nothing but a `failed` fetch-run record, in a transaction of its own.
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, insert, or_, select, update

from etl.base.errors import ApiError, DatabaseError
from etl.base.timeutil import format_rfc3339, jsonable, local_date, utcnow
from etl.source.api import Listing, VoltusClient
from etl.source.jsonscan import TooDeep
from etl.source.records import (
    Dispatch,
    Program,
    Rejected,
    SiteBatch,
    fingerprint,
    has_unknown_fields,
    item_fingerprint,
    parse_dispatches,
    record_id,
    storable,
)
from etl.store import binding
from etl.store.db import (
    RecordRefused,
    dialect_insert,
    read_transaction,
    record_savepoint,
    write_transaction,
)
from etl.store.events import NewEvent
from etl.store.events import append as append_events
from etl.store.schema import (
    FetchKind,
    FetchOutcome,
    dispatch_sites,
    dispatches,
    fetch_runs,
    programs,
    rejected_records,
    sites,
)

FETCH_LOCK = "etl.fetch"
IN_CHUNK = 500  # ids per `IN (...)`: well under SQLite's bound-parameter limit


PROGRAM_COLUMNS = ("name", "timezone", "market", "program_type")
SITE_COLUMNS = ("name", "customer_location_id", "meters")
# dispatch columns compared field by field; `raw` keeps whatever else the API sends
DISPATCH_FIELDS = (
    "program_id",
    "authorized",
    "test",
    "start_time",
    "end_time",
    "creation_time",
    "modification_number",
    "metadata",
)
# raw keys whose changes other events already report (or that are the fields above)
RAW_KEYS_REPORTED = {"id", "program", "sites", *DISPATCH_FIELDS}
DISPATCH_SITE_COLUMNS = ("dispatch_id", "site_id", "commitment_kw", "added_at", "removed_at")

Row = dict[str, Any]


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


@dataclass(frozen=True)
class _LastSuccess:
    """Of the last successful listing, which the next listing is compared with."""

    fingerprint: str | None
    dispatches_received: int
    rejected: int
    # when it asked the API: no older answer, listing or lookup, is written
    requested_at: datetime | None


def fetch(engine: Engine, client: VoltusClient, include_sites: bool = False) -> FetchSummary:
    """One ingestion pass. On any failure (API, database, interruption) the store is left as it
    was, a `failed` fetch run records why, and the error propagates."""
    started_at = utcnow()
    api = client.settings
    binding.check(engine, api.url, api.key)  # another account's store: refused, not recorded
    try:
        with read_transaction(engine) as conn:
            last = _last_success(conn)
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
        record_failure(engine, started_at, error, FetchKind.LISTING)
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
        record_failure(engine, started_at, error, FetchKind.LOOKUP)
        raise


def _last_success(conn: Connection) -> _LastSuccess:
    last = (
        select(fetch_runs)
        .where(fetch_runs.c.outcome == FetchOutcome.SUCCEEDED)
        .order_by(fetch_runs.c.id.desc())
        .limit(1)
    )
    # listings commit in the order of their requests (an older one is superseded), so the last
    # by id asked last
    listing = conn.execute(last.where(fetch_runs.c.kind == FetchKind.LISTING)).first()
    if listing is None:
        return _LastSuccess(None, 0, 0, None)
    return _LastSuccess(
        listing.body_fingerprint,
        listing.dispatches_received,
        listing.rejected,
        listing.listing_requested_at,
    )


def _looked_up_since(conn: Connection, requested_at: datetime) -> set[str]:
    """The dispatches that a lookup asked for after `requested_at` and has stored: an answer
    asked for before leaves each of them as that lookup found it. (Such a lookup finished
    after it asked, hence the index on (outcome, finished_at).)"""
    return set(
        conn.execute(
            select(fetch_runs.c.dispatch_id).where(
                fetch_runs.c.outcome == FetchOutcome.SUCCEEDED,
                fetch_runs.c.finished_at > requested_at,
                fetch_runs.c.kind == FetchKind.LOOKUP,
                fetch_runs.c.listing_requested_at > requested_at,
            )
        ).scalars()
    )


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
    return deep | {item_id for item_id in map(_id_of, items) if item_id is not None}


def _look_up_missing(
    client: VoltusClient, listing: Listing, last: _LastSuccess, not_ended: dict[str, Any]
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


def record_failure(
    engine: Engine, started_at: datetime, error: BaseException, kind: FetchKind
) -> None:
    if isinstance(error, DatabaseError):
        return  # the database itself is failing (or locked): recording it would fail (or wait)
    reason = str(error) or type(error).__name__
    if isinstance(error, KeyboardInterrupt):
        reason = "interrupted"
    row = fetch_run_row(started_at, FetchOutcome.FAILED, kind, error=reason)
    try:
        with write_transaction(engine, FETCH_LOCK) as conn:
            conn.execute(insert(fetch_runs), row)
    except DatabaseError:
        pass  # the database itself is failing: the original error is the one to report


def fetch_run_row(
    started_at: datetime, outcome: FetchOutcome, kind: FetchKind, **counts: Any
) -> Row:
    row: Row = {
        "started_at": started_at,
        "finished_at": utcnow(),
        "outcome": outcome,
        "kind": kind,
        "listing_requested_at": None,
        "dispatches_received": 0,
        "dispatches_created": 0,
        "dispatches_changed": 0,
        "sites_received": 0,
        "rejected": 0,
        "events": 0,
        "error": None,
        "body_fingerprint": None,
        "clock_offset_seconds": None,
        "dispatch_id": None,
    }
    row.update(counts)
    return row


@dataclass
class Changes:
    """What one fetch writes: rows per table, and the events, in the order observed."""

    programs: list[Row] = field(default_factory=list)
    sites: list[Row] = field(default_factory=list)
    dispatches: list[Row] = field(default_factory=list)
    dispatch_sites: list[Row] = field(default_factory=list)
    rejected: list[Row] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    created: int = 0  # dispatches seen for the first time
    changed: int = 0


def ingest(
    conn: Connection, snapshot: Snapshot, started_at: datetime, one_by_one: bool = False
) -> FetchSummary:
    """Write what changed; the caller holds the fetch lock, so what is read here stays true.
    `one_by_one` writes each record in a savepoint of its own, setting aside those the database
    refuses: slower, for when writing them all at once failed."""
    now = utcnow()
    last = _last_success(conn)
    newer = _looked_up_since(conn, snapshot.requested_at)
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
    found, mismatched = _answers_by_id(snapshot.looked_up)
    applied = [item for item in unique_items if _id_of(item) not in newer]
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
    diff_rejected(conn, rejected, now, changes)
    _end_vanished(conn, snapshot, now, changes)

    if listing is None:
        received = len(found)
    else:
        received = last.dispatches_received if same_body else len(items)
    run = fetch_run_row(
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
    run_id = conn.execute(insert(fetch_runs).returning(fetch_runs.c.id), run).scalar_one()
    if changes.rejected:
        conn.execute(
            insert(rejected_records), [{**r, "fetch_run_id": run_id} for r in changes.rejected]
        )
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
    """Diff the records with what is stored and write what changed; their events and counts
    are added to `changes` once all is written."""
    part = Changes()
    _diff_programs(conn, candidates, now, part)
    _diff_sites(conn, candidates, site_batch, now, part)
    _diff_dispatches(conn, candidates, fingerprints, now, part)
    upsert(conn, programs, part.programs, ["id"])
    upsert(conn, sites, part.sites, ["id"])
    upsert(conn, dispatches, part.dispatches, ["id"])
    upsert(conn, dispatch_sites, part.dispatch_sites, ["dispatch_id", "site_id"])
    changes.events += part.events
    changes.created += part.created
    changes.changed += part.changed


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
            refused.append(Rejected("dispatch", dispatch.id, reason, dispatch.raw))
    for site in site_batch.sites if site_batch else []:
        try:
            with record_savepoint(conn):
                _store(conn, [], SiteBatch([site], []), fingerprints, now, changes)
        except RecordRefused as error:
            reason = f"site: the database refused it: {error}"
            refused.append(Rejected("site", site.id, reason, {"id": site.id, "name": site.name}))
    records = len(candidates) + (len(site_batch.sites) if site_batch else 0)
    if len(refused) >= 2 and len(refused) == records:
        # not the records but the database (full, read-only, permissions): a failed fetch, not
        # a store emptied of what the API says
        raise DatabaseError(f"the database refused every record: {refused[0].reason}")
    return refused


def _superseded(
    conn: Connection, snapshot: Snapshot, listed_at: datetime | None, started_at: datetime
) -> FetchSummary:
    """Nothing written but the record of why: an answer older than the last listing stored
    (`listed_at`), or a lookup older than another one of its dispatch."""
    stored = "listing" if listed_at is not None else "lookup of its dispatch"
    asked = f", requested at {format_rfc3339(listed_at)}" if listed_at is not None else ""
    note = (
        f"its {snapshot.kind}, requested at {format_rfc3339(snapshot.requested_at)}, is older "
        f"than the stored {stored}{asked}: nothing written"
    )
    row = fetch_run_row(
        started_at,
        FetchOutcome.SUPERSEDED,
        snapshot.kind,
        listing_requested_at=snapshot.requested_at,
        error=note,
        body_fingerprint=snapshot.listing.fingerprint if snapshot.listing else None,
        dispatch_id=snapshot.lookup_of,
    )
    run_id = conn.execute(insert(fetch_runs).returning(fetch_runs.c.id), row).scalar_one()
    return FetchSummary(
        run_id, 0, 0, 0, 0, 0, outcome=FetchOutcome.SUPERSEDED, note=note, kind=snapshot.kind
    )


def split_duplicates(items: list[Any]) -> tuple[list[Any], list[Rejected]]:
    """Copies of one id that are identical are one record. Of copies that differ, the one with
    the highest `modification_number` is the dispatch as it is now, and the others are set aside
    as older; when no single copy has the highest (equal numbers, or one missing), which is true
    cannot be told: all are set aside for this fetch, and the stored state stays."""
    copies: dict[str, dict[str, Any]] = {}  # id -> fingerprint -> copy
    unique: list[Any] = []
    for item in items:
        item_id = _id_of(item)
        if item_id is None:
            unique.append(item)  # parse_dispatches rejects it with its reason
            continue
        if item_id not in copies:
            unique.append(item)
        copies.setdefault(item_id, {})[item_fingerprint(item)] = item
    chosen: dict[str, Any] = {}
    rejected: list[Rejected] = []
    for item_id in sorted(i for i, distinct in copies.items() if len(distinct) > 1):
        distinct = list(copies[item_id].values())
        newest = _newest(distinct)
        if newest is not None:
            chosen[item_id] = newest
        for copy in distinct:
            if newest is None:
                reason = f"dispatch: {len(distinct)} different copies of this id in one listing"
            elif copy is newest:
                continue
            else:
                reason = (
                    f"dispatch: an older copy of this id in one listing (modification_number "
                    f"{copy['modification_number']}; the newest is {newest['modification_number']})"
                )
            rejected.append(Rejected("dispatch", record_id(copy), reason, copy))
    kept = []
    for item in unique:
        item_id = _id_of(item) if isinstance(item, dict) else None
        if item_id is None or len(copies[item_id]) == 1:
            kept.append(item)
        elif item_id in chosen:
            kept.append(chosen[item_id])
    return kept, rejected


def _newest(copies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The one copy with the highest modification_number, if every copy has a valid one."""
    numbers = [copy.get("modification_number") for copy in copies]
    if not all(type(n) is int and n >= 0 for n in numbers):
        return None
    highest = max(numbers)
    if numbers.count(highest) > 1:
        return None
    return copies[numbers.index(highest)]


def _id_of(item: Any) -> str | None:
    item_id = item.get("id") if isinstance(item, dict) else None
    return item_id if isinstance(item_id, str) else None


def _answers_by_id(looked_up: dict[str, Any | None]) -> tuple[list[Any], list[Rejected]]:
    """The dispatches the API returned by id, to be ingested like listed ones; an answer that is
    not the dispatch asked for is set aside."""
    found, mismatched = [], []
    for wanted, item in looked_up.items():
        if item is None:
            continue
        if _id_of(item) == wanted:
            found.append(item)
        else:
            reason = f"dispatch: asked for {wanted!r} by id, got another"
            mismatched.append(Rejected("dispatch", wanted, reason, item))
    return found, mismatched


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
    stored = dict(_select_in(conn, [dispatches.c.id, dispatches.c.content_hash], fingerprints))

    def unchanged(item: Any) -> bool:
        item_id = _id_of(item)
        return item_id in stored and stored[item_id] == fingerprints[item_id]

    batch = parse_dispatches([item for item in items if not unchanged(item)])
    return batch.dispatches, batch.rejected, fingerprints


# -- the pure part: old row and new record in, rows and events out --------------------------


def program_change(
    old: Row | None, program: Program, now: datetime
) -> tuple[Row | None, list[NewEvent]]:
    row = {column: getattr(program, column) for column in PROGRAM_COLUMNS}
    if old is None:
        events = [NewEvent("program_seen", row, program_id=program.id)]
    elif changes := _changes(old, row):
        events = [NewEvent("program_changed", {"changes": changes}, program_id=program.id)]
    else:
        return None, []
    return _versioned(old, {"id": program.id, **row}, now), events


def site_change(
    old: Row | None, site_id: str, row: Row, now: datetime
) -> tuple[Row | None, list[NewEvent]]:
    """`row` has the site's name and customer location, and its meters when /sites sent them."""
    if "meters" not in row:  # a dispatch does not list meters: keep what /sites said
        row = {**row, "meters": old["meters"] if old else None}
    if old is None:
        events = [NewEvent("site_seen", row, site_id=site_id)]
    elif changes := _changes(old, row):
        events = []
        if renamed := changes.pop("name", None):
            events.append(NewEvent("site_renamed", renamed, site_id=site_id))
        if changes:
            events.append(NewEvent("site_changed", {"changes": changes}, site_id=site_id))
    else:
        return None, []
    return _versioned(old, {"id": site_id, **row}, now), events


@dataclass(frozen=True)
class DispatchChange:
    row: Row
    site_rows: list[Row]
    events: list[NewEvent]


def dispatch_change(
    old: Row | None,
    old_sites: dict[str, Row],
    dispatch: Dispatch,
    content_hash: str,
    now: datetime,
) -> DispatchChange | None:
    """The rows and events of a dispatch new or changed; None for an older state than the one
    stored (a lower modification_number), which is ignored."""
    if old is not None and _older(dispatch.modification_number, old["modification_number"]):
        return None
    row = {
        "program_id": dispatch.program.id,
        "authorized": dispatch.authorized,
        "test": dispatch.test,
        "start_time": dispatch.start_time,
        "end_time": dispatch.end_time,
        "creation_time": dispatch.creation_time,
        "modification_number": dispatch.modification_number,
        "metadata": dispatch.metadata,
    }
    if old is None:
        details = {k: jsonable(v) for k, v in row.items() if k != "metadata"}
        details["sites"] = [site.id for site in dispatch.sites]
        events = [NewEvent("dispatch_created", details, dispatch_id=dispatch.id)]
    else:
        events = _dispatch_events(dispatch.id, old, row, dispatch.raw)
    full_row = {
        "id": dispatch.id,
        **row,
        "start_date_local": local_date(dispatch.start_time, dispatch.program.timezone),
        "raw": json.dumps(dispatch.raw) if has_unknown_fields(dispatch.raw) else None,
        "content_hash": content_hash,
    }
    site_rows, site_events = _dispatch_site_changes(dispatch, old_sites, old is None, now)
    return DispatchChange(_versioned(old, full_row, now), site_rows, events + site_events)


def _older(new: int | None, stored: int | None) -> bool:
    return new is not None and stored is not None and new < stored


def _dispatch_events(dispatch_id: str, old: Row, row: Row, raw: dict[str, Any]) -> list[NewEvent]:
    changes = _changes(old, row)
    old_raw = json.loads(old["raw"]) if old["raw"] else {}
    for key in sorted((set(old_raw) | set(raw)) - RAW_KEYS_REPORTED):
        if old_raw.get(key) != raw.get(key):
            changes[key] = {"old": old_raw.get(key), "new": raw.get(key)}
    events = []
    authorized = changes.get("authorized")
    if authorized and authorized["old"] and not authorized["new"]:
        del changes["authorized"]
        events.append(
            NewEvent("dispatch_cancelled", {"authorized": authorized}, dispatch_id=dispatch_id)
        )
    end_time = changes.get("end_time")
    if end_time and end_time["new"] is not None:
        del changes["end_time"]
        kind = "dispatch_end_time_set" if end_time["old"] is None else "dispatch_end_time_moved"
        events.append(NewEvent(kind, {"end_time": end_time}, dispatch_id=dispatch_id))
    if changes:
        events.append(NewEvent("dispatch_changed", {"changes": changes}, dispatch_id=dispatch_id))
    return events


def _dispatch_site_changes(
    dispatch: Dispatch, stored: dict[str, Row], created: bool, now: datetime
) -> tuple[list[Row], list[NewEvent]]:
    rows, events = [], []
    incoming = {site.id: site for site in dispatch.sites}
    for site_id, site in incoming.items():
        old = stored.get(site_id)
        row = {
            "dispatch_id": dispatch.id,
            "site_id": site_id,
            "commitment_kw": site.commitment_kw,
            "added_at": now,
            "removed_at": None,
        }
        subject = {"dispatch_id": dispatch.id, "site_id": site_id}
        if old is None or old["removed_at"] is not None:
            if not created:  # a new dispatch's sites are listed in its dispatch_created
                details = {"commitment_kw": site.commitment_kw}
                events.append(NewEvent("dispatch_site_added", details, **subject))
        elif old["commitment_kw"] != site.commitment_kw:
            row["added_at"] = old["added_at"]
            details = {"commitment_kw": {"old": old["commitment_kw"], "new": site.commitment_kw}}
            events.append(NewEvent("dispatch_site_changed", details, **subject))
        else:
            continue
        rows.append(row)
    for site_id, old in stored.items():
        if site_id not in incoming and old["removed_at"] is None:
            rows.append({**old, "removed_at": now})
            events.append(
                NewEvent("dispatch_site_removed", {}, dispatch_id=dispatch.id, site_id=site_id)
            )
    return rows, events


def rejected_row(record: Rejected, now: datetime) -> tuple[str, Row]:
    payload_hash = fingerprint(json.dumps(record.payload, sort_keys=True).encode())
    row = {
        "payload_hash": payload_hash,
        "kind": record.kind,
        "record_id": record.record_id,
        "reason": record.reason,
        "payload": storable(record.payload),
        "first_seen_at": now,
    }
    return payload_hash, row


def _changes(old: Row, new: Row) -> dict[str, dict[str, Any]]:
    return {
        key: {"old": jsonable(old[key]), "new": jsonable(value)}
        for key, value in new.items()
        if old[key] != value
    }


def _versioned(old: Row | None, row: Row, now: datetime) -> Row:
    first_seen = old["first_seen_at"] if old else now
    return {**row, "first_seen_at": first_seen, "updated_at": now}


# -- reading what is stored, and applying the pure part to it ---------------------------------


def _diff_programs(
    conn: Connection, candidates: list[Dispatch], now: datetime, changes: Changes
) -> None:
    incoming = {d.program.id: d.program for d in candidates}
    stored = _stored_rows(conn, programs, incoming, PROGRAM_COLUMNS)
    for program_id, program in incoming.items():
        row, events = program_change(stored.get(program_id), program, now)
        if row is not None:
            changes.programs.append(row)
            changes.events += events


def _diff_sites(
    conn: Connection,
    candidates: list[Dispatch],
    site_batch: SiteBatch | None,
    now: datetime,
    changes: Changes,
) -> None:
    incoming: dict[str, Row] = {}
    for dispatch in candidates:
        for site in dispatch.sites:
            incoming[site.id] = {
                "name": site.name,
                "customer_location_id": site.customer_location_id,
            }
    for site in site_batch.sites if site_batch else []:
        incoming[site.id] = {
            "name": site.name,
            "customer_location_id": site.customer_location_id,
            "meters": [
                {"id": m.id, "name": m.name, "asset_type": m.asset_type} for m in site.meters
            ],
        }
    stored = _stored_rows(conn, sites, incoming, SITE_COLUMNS)
    for site_id, fields in incoming.items():
        row, events = site_change(stored.get(site_id), site_id, fields, now)
        if row is not None:
            changes.sites.append(row)
            changes.events += events


def _diff_dispatches(
    conn: Connection,
    candidates: list[Dispatch],
    fingerprints: dict[str, str],
    now: datetime,
    changes: Changes,
) -> None:
    by_id = {d.id: d for d in candidates}
    stored = _stored_rows(conn, dispatches, by_id, [*DISPATCH_FIELDS, "raw"])
    stored_sites: dict[str, dict[str, Row]] = {}
    site_columns = [dispatch_sites.c[c] for c in DISPATCH_SITE_COLUMNS]
    for row in _select_in(conn, site_columns, by_id):
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


def diff_rejected(
    conn: Connection, rejected: list[Rejected], now: datetime, changes: Changes
) -> None:
    incoming = dict(rejected_row(record, now) for record in rejected)
    known = {
        row.payload_hash for row in _select_in(conn, [rejected_records.c.payload_hash], incoming)
    }
    for payload_hash, row in incoming.items():
        if payload_hash in known:
            continue  # the API sends the same bad record each minute: kept once
        changes.rejected.append(row)
        kind, record_id = row["kind"], row["record_id"]
        changes.events.append(
            NewEvent(
                f"{kind}_rejected",
                {"reason": row["reason"]},
                dispatch_id=record_id if kind == "dispatch" else None,
                site_id=record_id if kind in ("site", "telemetry") else None,
            )
        )


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
        changes.events.append(NewEvent("dispatch_vanished", details, dispatch_id=dispatch_id))


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


def chunks(keys: Iterable[Any]) -> Iterator[list[Any]]:
    """The keys, IN_CHUNK at a time: one `IN (...)` each, under SQLite's parameter limit."""
    keys = list(keys)
    for start in range(0, len(keys), IN_CHUNK):
        yield keys[start : start + IN_CHUNK]


def _select_in(
    conn: Connection, columns: Sequence[Column[Any]], keys: Iterable[Any]
) -> Iterator[Any]:
    """Rows whose first column is in `keys`, a chunk of keys per query."""
    for chunk in chunks(keys):
        yield from conn.execute(select(*columns).where(columns[0].in_(chunk)))


def _stored_rows(
    conn: Connection, table: Table, keys: Iterable[Any], columns: Sequence[str]
) -> dict[Any, Row]:
    selected = [table.c.id, *(table.c[c] for c in columns), table.c.first_seen_at]
    return {row.id: row._asdict() for row in _select_in(conn, selected, keys)}


def upsert(conn: Connection, table: Table, rows: list[Row], key: list[str]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE, skipping the update when nothing differs."""
    if not rows:
        return
    statement = dialect_insert(conn, table)
    updated = [c for c in rows[0] if c not in key and c != "first_seen_at"]
    compared = [c for c in updated if c != "updated_at"]
    statement = statement.on_conflict_do_update(
        index_elements=key,
        set_={c: statement.excluded[c] for c in updated},
        where=or_(*(table.c[c].is_distinct_from(statement.excluded[c]) for c in compared)),
    )
    conn.execute(statement, rows)
