"""Ingestion: API records into the store, with an event for every change observed.

A fetch is one transaction holding the fetch lock: it reads what is stored, works out in Python what
changed, then writes only that, with its events and its fetch-run record. What did not change costs
little: a response body identical to the last one stored is not even parsed, and a dispatch whose
fingerprint is unchanged is neither validated nor read nor written. A failed fetch writes nothing
but a `failed` fetch-run record, in a transaction of its own.
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, insert, or_, select

from etl import models
from etl.api import Listing, VoltusClient
from etl.db import dialect_insert, read_transaction, write_transaction
from etl.errors import DatabaseError
from etl.events import NewEvent
from etl.events import append as append_events
from etl.records import (
    Dispatch,
    Rejected,
    SiteBatch,
    fingerprint,
    has_unknown_fields,
    item_fingerprint,
    parse_dispatches,
)
from etl.timeutil import jsonable, local_date, utcnow

FETCH_LOCK = "etl.fetch"
IN_CHUNK = 500  # ids per `IN (...)`: well under SQLite's bound-parameter limit

programs = models.Program.__table__
sites = models.Site.__table__
dispatches = models.Dispatch.__table__
dispatch_sites = models.DispatchSite.__table__
fetch_runs = models.FetchRun.__table__
rejected_records = models.RejectedRecord.__table__

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


@dataclass
class FetchSummary:
    fetch_run_id: int
    dispatches_received: int
    dispatches_created: int
    dispatches_changed: int
    sites_received: int
    rejected: int
    events: list[NewEvent] = field(default_factory=list)

    @property
    def dispatches_unchanged(self) -> int:
        return self.dispatches_received - self.dispatches_created - self.dispatches_changed


@dataclass(frozen=True)
class _LastBody:
    fingerprint: str | None
    dispatches_received: int
    rejected: int


def fetch(engine: Engine, client: VoltusClient, include_sites: bool = False) -> FetchSummary:
    """One ingestion pass. On any failure (API, database, interruption) the store is left as it
    was, a `failed` fetch run records why, and the error propagates."""
    started_at = utcnow()
    try:
        last = _last_body(engine)
        listing = client.dispatches(unless=last.fingerprint)
        site_batch = client.sites() if include_sites else None
        with write_transaction(engine, FETCH_LOCK) as conn:
            return ingest(conn, listing or last, site_batch, started_at)
    except BaseException as error:
        _record_failure(engine, started_at, error)
        raise


def _last_body(engine: Engine) -> _LastBody:
    with read_transaction(engine) as conn:
        row = conn.execute(
            select(
                fetch_runs.c.body_fingerprint,
                fetch_runs.c.dispatches_received,
                fetch_runs.c.rejected,
            )
            .where(fetch_runs.c.outcome == "succeeded")
            .order_by(fetch_runs.c.id.desc())
            .limit(1)
        ).first()
    return _LastBody(*row) if row else _LastBody(None, 0, 0)


def _record_failure(engine: Engine, started_at: datetime, error: BaseException) -> None:
    reason = str(error) or type(error).__name__
    if isinstance(error, KeyboardInterrupt):
        reason = "interrupted"
    row = _fetch_run_row(started_at, "failed", error=reason)
    try:
        with write_transaction(engine, FETCH_LOCK) as conn:
            conn.execute(insert(fetch_runs), row)
    except DatabaseError:
        pass  # the database itself is failing: the original error is the one to report


def _fetch_run_row(started_at: datetime, outcome: str, **counts: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "started_at": started_at,
        "finished_at": utcnow(),
        "outcome": outcome,
        "dispatches_received": 0,
        "dispatches_created": 0,
        "dispatches_changed": 0,
        "sites_received": 0,
        "rejected": 0,
        "events": 0,
        "error": None,
        "body_fingerprint": None,
    }
    row.update(counts)
    return row


def ingest(
    conn: Connection,
    listing: Listing | _LastBody,
    site_batch: SiteBatch | None,
    started_at: datetime,
) -> FetchSummary:
    """Write what changed; the caller holds the fetch lock, so what is read here stays true.
    `listing` is the last stored body itself when the API sent that same body again."""
    now = utcnow()
    diff = _Diff(now)
    if isinstance(listing, Listing):
        received, carried_rejects = len(listing.items), 0
        changed, rejected, fingerprints = _changed_dispatches(conn, listing.items)
    else:  # the body stored last time: the same counts, and nothing else to do
        received, carried_rejects = listing.dispatches_received, listing.rejected
        changed, rejected, fingerprints = [], [], {}
    diff.programs(conn, changed)
    diff.sites(conn, changed, site_batch)
    diff.dispatches(conn, changed, fingerprints)
    rejected += site_batch.rejected if site_batch else []
    diff.rejected(conn, rejected)

    run = _fetch_run_row(
        started_at,
        "succeeded",
        dispatches_received=received,
        dispatches_created=diff.created,
        dispatches_changed=len(changed) - diff.created,
        sites_received=len(site_batch.sites) if site_batch else 0,
        rejected=len(rejected) + carried_rejects,
        events=len(diff.events),
        body_fingerprint=listing.fingerprint,
    )
    run_id = conn.execute(insert(fetch_runs).returning(fetch_runs.c.id), run).scalar_one()
    _upsert(conn, programs, diff.program_rows, ["id"])
    _upsert(conn, sites, diff.site_rows, ["id"])
    _upsert(conn, dispatches, diff.dispatch_rows, ["id"])
    _upsert(conn, dispatch_sites, diff.dispatch_site_rows, ["dispatch_id", "site_id"])
    if diff.rejected_rows:
        conn.execute(
            insert(rejected_records), [{**r, "fetch_run_id": run_id} for r in diff.rejected_rows]
        )
    append_events(conn, diff.events, now, run_id)
    return FetchSummary(
        fetch_run_id=run_id,
        dispatches_received=received,
        dispatches_created=diff.created,
        dispatches_changed=run["dispatches_changed"],
        sites_received=run["sites_received"],
        rejected=run["rejected"],
        events=diff.events,
    )


def _changed_dispatches(
    conn: Connection, items: list[Any]
) -> tuple[list[Dispatch], list[Rejected], dict[str, str]]:
    """The dispatches new or changed since stored, validated; the malformed ones set aside; and
    the items' fingerprints. An item whose fingerprint is the stored one is skipped unvalidated:
    it was valid then."""
    fingerprints = {
        item["id"]: item_fingerprint(item)
        for item in items
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    }
    stored = dict(_select_in(conn, [dispatches.c.id, dispatches.c.content_hash], fingerprints))

    def unchanged(item: Any) -> bool:
        item_id = item.get("id") if isinstance(item, dict) else None
        return item_id in stored and stored[item_id] == fingerprints[item_id]

    unseen = [item for item in items if not unchanged(item)]
    batch = parse_dispatches(unseen)
    return batch.dispatches, batch.rejected, fingerprints


class _Diff:
    """Compares incoming records with stored rows: collects the rows to write and the events."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.created = 0  # dispatches seen for the first time
        self.events: list[NewEvent] = []
        self.program_rows: list[dict[str, Any]] = []
        self.site_rows: list[dict[str, Any]] = []
        self.dispatch_rows: list[dict[str, Any]] = []
        self.dispatch_site_rows: list[dict[str, Any]] = []
        self.rejected_rows: list[dict[str, Any]] = []

    def programs(self, conn: Connection, changed: list[Dispatch]) -> None:
        incoming = {d.program.id: d.program for d in changed}
        columns = ["name", "timezone", "market", "program_type"]
        stored = _stored_rows(conn, programs, incoming, columns)
        for program_id, program in incoming.items():
            row = {column: getattr(program, column) for column in columns}
            old = stored.get(program_id)
            if old is None:
                self.events.append(NewEvent("program_seen", row, program_id=program_id))
            elif changes := _changes(old, row):
                self.events.append(
                    NewEvent("program_changed", {"changes": changes}, program_id=program_id)
                )
            else:
                continue
            self.program_rows.append(self._new_row(old, {"id": program_id, **row}))

    def sites(
        self, conn: Connection, changed: list[Dispatch], site_batch: SiteBatch | None
    ) -> None:
        incoming: dict[str, dict[str, Any]] = {}
        for dispatch in changed:
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
        stored = _stored_rows(conn, sites, incoming, ["name", "customer_location_id", "meters"])
        for site_id, row in incoming.items():
            old = stored.get(site_id)
            if "meters" not in row:  # a dispatch does not list meters: keep what /sites said
                row["meters"] = old["meters"] if old else None
            if old is None:
                self.events.append(NewEvent("site_seen", row, site_id=site_id))
            elif changes := _changes(old, row):
                renamed = changes.pop("name", None)
                if renamed:
                    self.events.append(NewEvent("site_renamed", renamed, site_id=site_id))
                if changes:
                    self.events.append(
                        NewEvent("site_changed", {"changes": changes}, site_id=site_id)
                    )
            else:
                continue
            self.site_rows.append(self._new_row(old, {"id": site_id, **row}))

    def dispatches(
        self, conn: Connection, changed: list[Dispatch], fingerprints: dict[str, str]
    ) -> None:
        by_id = {d.id: d for d in changed}
        stored = _stored_rows(conn, dispatches, by_id, [*DISPATCH_FIELDS, "raw"])
        stored_sites: dict[str, dict[str, dict[str, Any]]] = {}
        for row in _select_in(
            conn,
            [
                dispatch_sites.c.dispatch_id,
                dispatch_sites.c.site_id,
                dispatch_sites.c.commitment_kw,
                dispatch_sites.c.added_at,
                dispatch_sites.c.removed_at,
            ],
            by_id,
        ):
            stored_sites.setdefault(row.dispatch_id, {})[row.site_id] = row._asdict()
        for dispatch in changed:
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
            old = stored.get(dispatch.id)
            if old is None:
                self.created += 1
                self._created(dispatch, row)
            else:
                self._changed(dispatch.id, old, row, dispatch.raw)
            self.dispatch_rows.append(
                self._new_row(
                    old,
                    {
                        "id": dispatch.id,
                        **row,
                        "start_date_local": local_date(
                            dispatch.start_time, dispatch.program.timezone
                        ),
                        "raw": json.dumps(dispatch.raw)
                        if has_unknown_fields(dispatch.raw)
                        else None,
                        "content_hash": fingerprints[dispatch.id],
                    },
                )
            )
            self._dispatch_sites(dispatch, stored_sites.get(dispatch.id, {}), created=old is None)

    def _created(self, dispatch: Dispatch, row: dict[str, Any]) -> None:
        details = {k: jsonable(v) for k, v in row.items() if k != "metadata"}
        details["sites"] = [site.id for site in dispatch.sites]
        self.events.append(NewEvent("dispatch_created", details, dispatch_id=dispatch.id))

    def _changed(
        self, dispatch_id: str, old: dict[str, Any], row: dict[str, Any], raw: dict[str, Any]
    ) -> None:
        changes = _changes(old, row)
        old_raw = json.loads(old["raw"]) if old["raw"] else {}
        for key in sorted((set(old_raw) | set(raw)) - RAW_KEYS_REPORTED):
            if old_raw.get(key) != raw.get(key):
                changes[key] = {"old": old_raw.get(key), "new": raw.get(key)}
        authorized = changes.get("authorized")
        if authorized and authorized["old"] and not authorized["new"]:
            del changes["authorized"]
            self.events.append(
                NewEvent("dispatch_cancelled", {"authorized": authorized}, dispatch_id=dispatch_id)
            )
        end_time = changes.get("end_time")
        if end_time and end_time["new"] is not None:
            del changes["end_time"]
            kind = "dispatch_end_time_set" if end_time["old"] is None else "dispatch_end_time_moved"
            self.events.append(NewEvent(kind, {"end_time": end_time}, dispatch_id=dispatch_id))
        if changes:
            self.events.append(
                NewEvent("dispatch_changed", {"changes": changes}, dispatch_id=dispatch_id)
            )

    def _dispatch_sites(
        self, dispatch: Dispatch, stored: dict[str, dict[str, Any]], created: bool
    ) -> None:
        incoming = {site.id: site for site in dispatch.sites}
        for site_id, site in incoming.items():
            old = stored.get(site_id)
            row = {
                "dispatch_id": dispatch.id,
                "site_id": site_id,
                "commitment_kw": site.commitment_kw,
                "added_at": self.now,
                "removed_at": None,
            }
            if old is None or old["removed_at"] is not None:
                if not created:  # a new dispatch's sites are listed in its dispatch_created
                    self.events.append(
                        NewEvent(
                            "dispatch_site_added",
                            {"commitment_kw": site.commitment_kw},
                            dispatch_id=dispatch.id,
                            site_id=site_id,
                        )
                    )
            elif old["commitment_kw"] != site.commitment_kw:
                row["added_at"] = old["added_at"]
                self.events.append(
                    NewEvent(
                        "dispatch_site_changed",
                        {"commitment_kw": {"old": old["commitment_kw"], "new": site.commitment_kw}},
                        dispatch_id=dispatch.id,
                        site_id=site_id,
                    )
                )
            else:
                continue
            self.dispatch_site_rows.append(row)
        for site_id, old in stored.items():
            if site_id not in incoming and old["removed_at"] is None:
                self.dispatch_site_rows.append({**old, "removed_at": self.now})
                self.events.append(
                    NewEvent("dispatch_site_removed", {}, dispatch_id=dispatch.id, site_id=site_id)
                )

    def rejected(self, conn: Connection, rejected: list[Rejected]) -> None:
        incoming = {
            fingerprint(json.dumps(r.payload, sort_keys=True).encode()): r for r in rejected
        }
        known = {
            row.payload_hash
            for row in _select_in(conn, [rejected_records.c.payload_hash], incoming)
        }
        for payload_hash, record in incoming.items():
            if payload_hash in known:
                continue  # the API sends the same bad record each minute: kept once
            self.rejected_rows.append(
                {
                    "payload_hash": payload_hash,
                    "kind": record.kind,
                    "record_id": record.record_id,
                    "reason": record.reason,
                    "payload": record.payload,
                    "first_seen_at": self.now,
                }
            )
            self.events.append(
                NewEvent(
                    f"{record.kind}_rejected",
                    {"reason": record.reason},
                    dispatch_id=record.record_id if record.kind == "dispatch" else None,
                    site_id=record.record_id if record.kind == "site" else None,
                )
            )

    def _new_row(self, old: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
        first_seen = old["first_seen_at"] if old else self.now
        return {**row, "first_seen_at": first_seen, "updated_at": self.now}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: {"old": jsonable(old[key]), "new": jsonable(value)}
        for key, value in new.items()
        if old[key] != value
    }


def _chunks(keys: Iterable[Any]) -> Iterator[list[Any]]:
    keys = list(keys)
    for start in range(0, len(keys), IN_CHUNK):
        yield keys[start : start + IN_CHUNK]


def _select_in(
    conn: Connection, columns: Sequence[Column[Any]], keys: Iterable[Any]
) -> Iterator[Any]:
    """Rows whose first column is in `keys`, a chunk of keys per query."""
    for chunk in _chunks(keys):
        yield from conn.execute(select(*columns).where(columns[0].in_(chunk)))


def _stored_rows(
    conn: Connection, table: Table, keys: Iterable[Any], columns: list[str]
) -> dict[Any, dict[str, Any]]:
    selected = [table.c.id, *(table.c[c] for c in columns), table.c.first_seen_at]
    return {row.id: row._asdict() for row in _select_in(conn, selected, keys)}


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], key: list[str]) -> None:
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
