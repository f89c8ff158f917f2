"""What changed, as pure functions: a stored row and a new record in, rows and events out.

No database, no HTTP: `dispatches` reads what is stored, calls these, and writes what they
return. A dispatch whose `modification_number` is lower than the stored one is ignored; of
copies of one id in one listing, the newest wins (`split_duplicates`).
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etl.base.payloads import Rejected
from etl.base.timeutil import jsonable, local_date
from etl.base.vocabulary import EventKind, RecordKind
from etl.source.records import (
    Dispatch,
    Program,
    has_unknown_fields,
    item_fingerprint,
    record_id,
)
from etl.store.events import NewEvent
from etl.store.rows import Row

__all__ = [
    "DISPATCH_FIELDS",
    "DISPATCH_SITE_COLUMNS",
    "PROGRAM_COLUMNS",
    "SITE_COLUMNS",
    "Changes",
    "DispatchChange",
    "answers_by_id",
    "dispatch_change",
    "id_of",
    "program_change",
    "rejected_events",
    "site_change",
    "split_duplicates",
]

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

    def add_written(self, written: "Changes") -> None:
        """Take on the events and counts of changes whose rows are written."""
        self.events += written.events
        self.created += written.created
        self.changed += written.changed


def split_duplicates(items: list[Any]) -> tuple[list[Any], list[Rejected]]:
    """Copies of one id that are identical are one record. Of copies that differ, the one with
    the highest `modification_number` is the dispatch as it is now, and the others are set aside
    as older; when no single copy has the highest (equal numbers, or one missing), which is true
    cannot be told: all are set aside for this fetch, and the stored state stays."""
    counts = Counter(id_of(item) for item in items)
    copies: dict[str, dict[str, Any]] = {}  # id -> fingerprint -> copy, of ids listed twice
    for item in items:
        item_id = id_of(item)
        if item_id is not None and counts[item_id] > 1:
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
            rejected.append(Rejected(RecordKind.DISPATCH, record_id(copy), reason, copy))
    kept: list[Any] = []
    placed: set[str] = set()  # ids listed twice whose one copy (or none) is kept already
    for item in items:
        item_id = id_of(item)
        if item_id is None or item_id not in copies:
            kept.append(item)  # an item without an id: parse_dispatches rejects it with its reason
        elif item_id not in placed:
            placed.add(item_id)
            if len(copies[item_id]) == 1:
                kept.append(item)
            elif item_id in chosen:
                kept.append(chosen[item_id])
    return kept, rejected


def _newest(copies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The one copy with the highest modification_number, if every copy has a valid one."""
    numbers = [copy.get("modification_number") for copy in copies]
    if not all(type(n) is int and n >= 0 for n in numbers):
        return None
    highest = max(n for n in numbers if n is not None)
    if numbers.count(highest) > 1:
        return None
    return copies[numbers.index(highest)]


def id_of(item: Any) -> str | None:
    item_id = item.get("id") if isinstance(item, dict) else None
    return item_id if isinstance(item_id, str) else None


def answers_by_id(looked_up: dict[str, Any | None]) -> tuple[list[Any], list[Rejected]]:
    """The dispatches the API returned by id, to be ingested like listed ones; an answer that is
    not the dispatch asked for is set aside."""
    found, mismatched = [], []
    for wanted, item in looked_up.items():
        if item is None:
            continue
        if id_of(item) == wanted:
            found.append(item)
        else:
            reason = f"dispatch: asked for {wanted!r} by id, got another"
            mismatched.append(Rejected(RecordKind.DISPATCH, wanted, reason, item))
    return found, mismatched


def program_change(
    old: Row | None, program: Program, now: datetime
) -> tuple[Row | None, list[NewEvent]]:
    row = {column: getattr(program, column) for column in PROGRAM_COLUMNS}
    if old is None:
        events = [NewEvent(EventKind.PROGRAM_SEEN, row, program_id=program.id)]
    elif changes := _changes(old, row):
        events = [NewEvent(EventKind.PROGRAM_CHANGED, {"changes": changes}, program_id=program.id)]
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
        events = [NewEvent(EventKind.SITE_SEEN, row, site_id=site_id)]
    elif changes := _changes(old, row):
        events = []
        if renamed := changes.pop("name", None):
            events.append(NewEvent(EventKind.SITE_RENAMED, renamed, site_id=site_id))
        if changes:
            events.append(NewEvent(EventKind.SITE_CHANGED, {"changes": changes}, site_id=site_id))
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
        events = [NewEvent(EventKind.DISPATCH_CREATED, details, dispatch_id=dispatch.id)]
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
            NewEvent(
                EventKind.DISPATCH_CANCELLED, {"authorized": authorized}, dispatch_id=dispatch_id
            )
        )
    end_time = changes.get("end_time")
    if end_time and end_time["new"] is not None:
        del changes["end_time"]
        kind = (
            EventKind.DISPATCH_END_TIME_SET
            if end_time["old"] is None
            else EventKind.DISPATCH_END_TIME_MOVED
        )
        events.append(NewEvent(kind, {"end_time": end_time}, dispatch_id=dispatch_id))
    if changes:
        events.append(
            NewEvent(EventKind.DISPATCH_CHANGED, {"changes": changes}, dispatch_id=dispatch_id)
        )
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
        if old is None or old["removed_at"] is not None:
            if not created:  # a new dispatch's sites are listed in its dispatch_created
                added = {"commitment_kw": site.commitment_kw}
                kind = EventKind.DISPATCH_SITE_ADDED
                events.append(NewEvent(kind, added, dispatch_id=dispatch.id, site_id=site_id))
        elif old["commitment_kw"] != site.commitment_kw:
            row["added_at"] = old["added_at"]
            change = {"commitment_kw": {"old": old["commitment_kw"], "new": site.commitment_kw}}
            kind = EventKind.DISPATCH_SITE_CHANGED
            events.append(NewEvent(kind, change, dispatch_id=dispatch.id, site_id=site_id))
        else:
            continue
        rows.append(row)
    for site_id, old in stored.items():
        if site_id not in incoming and old["removed_at"] is None:
            rows.append({**old, "removed_at": now})
            events.append(
                NewEvent(
                    EventKind.DISPATCH_SITE_REMOVED, {}, dispatch_id=dispatch.id, site_id=site_id
                )
            )
    return rows, events


def _changes(old: Row, new: Row) -> dict[str, dict[str, Any]]:
    return {
        key: {"old": jsonable(old[key]), "new": jsonable(value)}
        for key, value in new.items()
        if old[key] != value
    }


def _versioned(old: Row | None, row: Row, now: datetime) -> Row:
    first_seen = old["first_seen_at"] if old else now
    return {**row, "first_seen_at": first_seen, "updated_at": now}


def rejected_events(rows: list[Row]) -> list[NewEvent]:
    """One event per record set aside for the first time (rows of `rejected_records`)."""
    return [
        NewEvent(
            EventKind(f"{row['kind']}_rejected"),
            {"reason": row["reason"]},
            dispatch_id=row["record_id"] if row["kind"] == "dispatch" else None,
            site_id=row["record_id"] if row["kind"] in ("site", "telemetry") else None,
        )
        for row in rows
    ]
