"""The record of every fetch (`fetch_runs`), and its rules: the one module that queries it.

A fetch writes its run in the transaction that writes its data, under FETCH_LOCK; a failed fetch
writes its run alone. The next listing is compared with the last successful one; an answer asked
for before a stored one is superseded; the planner tells a missed dispatch from one that ended
before the store began by the first successful run; `etl status` judges freshness by the last
runs of each kind; and `etl db prune` keeps the table bounded without losing any of these.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, true

from etl.base.errors import DatabaseError
from etl.base.timeutil import utcnow
from etl.base.vocabulary import FetchKind, FetchOutcome
from etl.store.db import write_transaction
from etl.store.schema import events, fetch_runs, rejected_records

__all__ = [
    "FETCH_LOCK",
    "EndedRun",
    "LastListing",
    "add",
    "first_success_started_at",
    "last_listing",
    "last_run",
    "looked_up_since",
    "new_row",
    "prune",
    "record_failure",
    "succeeded_after",
]

FETCH_LOCK = "etl.fetch"  # held by every fetch while it writes: fetches take turns


def new_row(
    started_at: datetime, outcome: FetchOutcome, kind: FetchKind, **counts: Any
) -> dict[str, Any]:
    """A fetch run ending now: zero counts unless given."""
    row: dict[str, Any] = {
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


def add(conn: Connection, row: dict[str, Any]) -> int:
    """Write a run; its id, which its events and rejected records refer to."""
    return conn.execute(insert(fetch_runs).returning(fetch_runs.c.id), row).scalar_one()


def record_failure(
    engine: Engine, started_at: datetime, error: BaseException, kind: FetchKind
) -> None:
    """A failed run, in a transaction of its own (the fetch's own was rolled back)."""
    if isinstance(error, DatabaseError):
        return  # the database itself is failing (or locked): recording it would fail (or wait)
    reason = str(error) or type(error).__name__
    if isinstance(error, KeyboardInterrupt):
        reason = "interrupted"
    row = new_row(started_at, FetchOutcome.FAILED, kind, error=reason)
    try:
        with write_transaction(engine, FETCH_LOCK) as conn:
            add(conn, row)
    except DatabaseError:
        pass  # the database itself is failing: the original error is the one to report


@dataclass(frozen=True)
class LastListing:
    """Of the last successful listing, which the next listing is compared with."""

    fingerprint: str | None
    dispatches_received: int
    rejected: int
    # when it asked the API: no older answer, listing or lookup, is written
    requested_at: datetime | None


def last_listing(conn: Connection) -> LastListing:
    # listings commit in the order of their requests (an older one is superseded), so the last
    # by id asked last
    listing = conn.execute(
        select(fetch_runs)
        .where(fetch_runs.c.outcome == FetchOutcome.SUCCEEDED)
        .where(fetch_runs.c.kind == FetchKind.LISTING)
        .order_by(fetch_runs.c.id.desc())
        .limit(1)
    ).first()
    if listing is None:
        return LastListing(None, 0, 0, None)
    return LastListing(
        listing.body_fingerprint,
        listing.dispatches_received,
        listing.rejected,
        listing.listing_requested_at,
    )


def looked_up_since(conn: Connection, requested_at: datetime) -> set[str]:
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


def first_success_started_at(conn: Connection) -> datetime | None:
    """When the store's first successful fetch began (first by id: the primary key's order).
    `prune` keeps that run."""
    return conn.execute(
        select(fetch_runs.c.started_at)
        .where(fetch_runs.c.outcome == FetchOutcome.SUCCEEDED)
        .order_by(fetch_runs.c.id)
        .limit(1)
    ).scalar()


@dataclass(frozen=True)
class EndedRun:
    finished_at: datetime
    error: str | None
    clock_offset_seconds: float | None


def last_run(
    conn: Connection, kind: FetchKind, outcome: FetchOutcome, since: datetime | None = None
) -> EndedRun | None:
    """The latest run of this kind with this outcome (that ended `since`, if given), by the
    (outcome, finished_at) index: `since` bounds the runs of other kinds walked past. `prune`
    keeps the latest of each kind and outcome."""
    runs = fetch_runs.c
    recent = runs.finished_at >= since if since is not None else true()
    row = conn.execute(
        select(runs.finished_at, runs.error, runs.clock_offset_seconds)
        .where(runs.outcome == outcome, runs.kind == kind, recent)
        .order_by(runs.finished_at.desc())
        .limit(1)
    ).first()
    return None if row is None else EndedRun(*row)


def succeeded_after(conn: Connection, kind: FetchKind, moment: datetime) -> bool:
    """Whether a run of this kind succeeded after `moment` (walked by the same index, in time
    order from it)."""
    runs = fetch_runs.c
    later = select(runs.id).where(
        runs.outcome == FetchOutcome.SUCCEEDED, runs.kind == kind, runs.finished_at > moment
    )
    return bool(conn.execute(later.exists().select()).scalar())


def prune(engine: Engine, older_than: timedelta) -> int:
    """Delete the runs older than `older_than` that recorded no event and no rejected record
    (unchanged and failed fetches), except the latest of each outcome and kind (`last_run`,
    `last_listing`) and the first successful one (`first_success_started_at`); return how
    many went. A fetch runs every minute: 1,440 rows a day even when nothing changes."""
    cutoff = utcnow() - older_than
    with write_transaction(engine) as conn:
        latest = select(func.max(fetch_runs.c.id)).group_by(fetch_runs.c.outcome, fetch_runs.c.kind)
        first = select(func.min(fetch_runs.c.id)).where(
            fetch_runs.c.outcome == FetchOutcome.SUCCEEDED
        )
        result = conn.execute(
            delete(fetch_runs).where(
                fetch_runs.c.finished_at < cutoff,
                fetch_runs.c.id.not_in(latest.union(first)),
                ~select(events.c.id).where(events.c.fetch_run_id == fetch_runs.c.id).exists(),
                ~select(rejected_records.c.id)
                .where(rejected_records.c.fetch_run_id == fetch_runs.c.id)
                .exists(),
            )
        )
        return result.rowcount
