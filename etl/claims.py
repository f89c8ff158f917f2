"""Claims: taking due actions atomically, and recording how each attempt ended.

A claim is one UPDATE ... RETURNING over the due actions: never read-then-write. On PostgreSQL its
subquery takes rows `FOR UPDATE SKIP LOCKED`, so workers on many machines share the work without
waiting on each other; on SQLite the database's write lock serializes claims. A claim expires
after ETL_CLAIM_TIMEOUT_SECONDS: if its process died, another takes the action over and runs it
again with the same idempotency key. Results are fenced: an attempt whose claim was taken over
is recorded in its attempt row, but cannot change the action's state.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, insert, select, update

from etl import models
from etl.actions import (
    CLAIMABLE,
    OPEN,
    WITH_DISPATCH_SITE,
    actions,
    attempts,
    dispatch_sites,
    dispatches,
    event,
    insert_new,
    new_row,
    row_event,
)
from etl.config import ProcessorSettings
from etl.db import write_transaction
from etl.events import NewEvent
from etl.events import append as append_events
from etl.handlers import KEPT_OUTPUT_CHARS, ActionRequest
from etl.timeutil import format_rfc3339, utcnow

# a restore is retried this many times at most; a curtail, for as long as its dispatch is active
RESTORE_MAX_ATTEMPTS = 10
MAX_BACKOFF = timedelta(hours=1)

sites = models.Site.__table__
programs = models.Program.__table__


@dataclass(frozen=True)
class Claimed:
    action_id: int
    attempt: int
    request: ActionRequest


def claim(engine: Engine, worker: str, limit: int, settings: ProcessorSettings) -> list[Claimed]:
    """Up to `limit` due actions, now claimed by `worker`, each with a new attempt row."""
    with write_transaction(engine) as conn:
        now = utcnow()
        due = (
            select(actions.c.id)
            .where(OPEN, actions.c.state.in_(CLAIMABLE), actions.c.available_at <= now)
            .order_by(actions.c.available_at, actions.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        taken = conn.execute(
            update(actions)
            .where(actions.c.id.in_(due.scalar_subquery()))
            .values(
                state="claimed",
                claimed_by=worker,
                claimed_at=now,
                available_at=now + timedelta(seconds=settings.claim_timeout),
                attempts=actions.c.attempts + 1,
            )
            .returning(actions.c.id, actions.c.attempts)
        ).all()
        if not taken:
            return []
        ids = [row.id for row in taken]
        taken_over = set(
            conn.execute(
                update(attempts)
                .where(attempts.c.action_id.in_(ids), attempts.c.outcome.is_(None))
                .values(
                    outcome="abandoned",
                    finished_at=now,
                    error="its process stopped before recording an outcome; taken over",
                )
                .returning(attempts.c.action_id)
            ).scalars()
        )
        conn.execute(
            insert(attempts),
            [
                {"action_id": r.id, "number": r.attempts, "worker": worker, "started_at": now}
                for r in taken
            ],
        )
        claimed = _requests(conn, ids)
        append_events(
            conn,
            [
                _event(
                    c,
                    "claimed",
                    worker=worker,
                    attempt=c.attempt,
                    taken_over=c.action_id in taken_over,
                )
                for c in claimed
            ],
            now,
        )
        return claimed


def _requests(conn: Connection, ids: list[int]) -> list[Claimed]:
    rows = conn.execute(
        select(
            actions.c.id,
            actions.c.kind,
            actions.c.attempts,
            actions.c.idempotency_key,
            actions.c.dispatch_id,
            actions.c.site_id,
            sites.c.name.label("site_name"),
            sites.c.customer_location_id,
            dispatch_sites.c.commitment_kw,
            dispatches.c.test,
            dispatches.c.start_time,
            dispatches.c.end_time,
            programs.c.id.label("program_id"),
            programs.c.name.label("program_name"),
        )
        .select_from(
            WITH_DISPATCH_SITE.join(sites, sites.c.id == actions.c.site_id).join(
                programs, programs.c.id == dispatches.c.program_id
            )
        )
        .where(actions.c.id.in_(ids))
        .order_by(actions.c.dispatch_id, actions.c.site_id)
    ).all()
    return [
        Claimed(
            action_id=row.id,
            attempt=row.attempts,
            request=ActionRequest(
                action=row.kind,
                dispatch_id=row.dispatch_id,
                site_id=row.site_id,
                site_name=row.site_name,
                customer_location_id=row.customer_location_id,
                commitment_kw=row.commitment_kw,
                idempotency_key=row.idempotency_key,
                test=row.test,
                start_time=row.start_time,
                end_time=row.end_time,
                program_id=row.program_id,
                program_name=row.program_name,
                attempt=row.attempts,
            ),
        )
        for row in rows
    ]


def succeed(engine: Engine, claimed: Claimed, worker: str, output: str) -> bool:
    """Record a successful attempt; a curtail's site then awaits its restore. False when the
    claim had been taken over meanwhile (the action's state is then the new owner's to set)."""
    with write_transaction(engine) as conn:
        now = utcnow()
        _finish_attempt(conn, claimed, now, "succeeded", output=output[-KEPT_OUTPUT_CHARS:])
        if not _set_if_still_ours(conn, claimed, worker, state="succeeded", finished_at=now):
            return False
        new_events = [_event(claimed, "succeeded", attempt=claimed.attempt)]
        if claimed.request.action == "curtail":
            request = claimed.request
            restore = new_row(request.dispatch_id, request.site_id, "restore", "waiting", now)
            new_events += [row_event(row) for row in insert_new(conn, [restore])]
        append_events(conn, new_events, now)
        return True


def fail(
    engine: Engine, claimed: Claimed, worker: str, error: str, settings: ProcessorSettings
) -> bool:
    """Record a failed attempt and schedule the next one with exponential backoff (the planner
    ends a curtail's retries when its dispatch is over); a restore gives up after
    RESTORE_MAX_ATTEMPTS. False when the claim had been taken over meanwhile."""
    with write_transaction(engine) as conn:
        now = utcnow()
        error = error[-KEPT_OUTPUT_CHARS:]
        _finish_attempt(conn, claimed, now, "failed", error=error)
        if claimed.request.action == "restore" and claimed.attempt >= RESTORE_MAX_ATTEMPTS:
            note = f"gave up after {claimed.attempt} failed attempts"
            changed = _set_if_still_ours(
                conn, claimed, worker, state="failed", note=note, finished_at=now
            )
            new_event = _event(claimed, "failed", attempt=claimed.attempt, error=error, note=note)
        else:
            delay = min(
                timedelta(seconds=settings.retry_backoff * 2 ** (claimed.attempt - 1)), MAX_BACKOFF
            )
            retry_at = now + delay
            changed = _set_if_still_ours(
                conn, claimed, worker, state="retrying", note=error, available_at=retry_at
            )
            new_event = _event(
                claimed,
                "retrying",
                attempt=claimed.attempt,
                error=error,
                retry_at=format_rfc3339(retry_at),
            )
        if changed:
            append_events(conn, [new_event], now)
        return changed


def _finish_attempt(
    conn: Connection, claimed: Claimed, now: datetime, outcome: str, **text: str
) -> None:
    conn.execute(
        update(attempts)
        .where(attempts.c.action_id == claimed.action_id, attempts.c.number == claimed.attempt)
        .values(finished_at=now, outcome=outcome, **text)
    )


def _set_if_still_ours(conn: Connection, claimed: Claimed, worker: str, **values: object) -> bool:
    result = conn.execute(
        update(actions)
        .where(
            actions.c.id == claimed.action_id,
            actions.c.state == "claimed",
            actions.c.claimed_by == worker,
            actions.c.attempts == claimed.attempt,
        )
        .values(**({"available_at": None} | values))
    )
    return result.rowcount == 1


def _event(claimed: Claimed, state: str, **details: object) -> NewEvent:
    request = claimed.request
    return event(
        request.action,
        request.dispatch_id,
        request.site_id,
        request.idempotency_key,
        state,
        **details,
    )
