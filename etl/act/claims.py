"""Claims: taking due actions atomically, and recording how each attempt ended.

A claim is one transaction that takes the due actions and marks them claimed: on PostgreSQL it
selects them `FOR UPDATE SKIP LOCKED`, so workers on many machines share the work without
waiting on each other; on SQLite the database's write lock serializes claims. A claim expires
after ETL_CLAIM_TIMEOUT_SECONDS: if its process died, another takes the action over and runs it
again with the same idempotency key. Results are fenced: an attempt whose claim was taken over
is recorded in its attempt row, but cannot change the action's state.

Commands to one site go in the order they were planned: an action is not claimed while an older
action of the opposite kind for its site is still under way (due, running or to be retried), so
a restore and the curtail of a site held again never run at once or out of order. Such an older
action is, by then, obsolete: one that fails is not retried.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    case,
    select,
    tuple_,
    update,
)

from etl.act.actions import (
    CLAIMABLE,
    OPEN,
    UNDER_WAY,
    WITH_DISPATCH_SITE,
    ActionKind,
    Taken,
    event,
    expire_claims,
    renew_claims,
    restores_owed,
    set_final,
    set_retrying,
    set_succeeded,
    still_claimed,
    take,
)
from etl.base.config import ProcessorSettings
from etl.base.redact import redact_text
from etl.base.timeutil import format_rfc3339, utcnow
from etl.base.vocabulary import ActionState, AttemptOutcome, Holding
from etl.handlers import KEPT_OUTPUT_CHARS, ActionRequest
from etl.source.records import Unmodeled
from etl.store.db import write_transaction
from etl.store.events import NewEvent
from etl.store.events import append as append_events
from etl.store.rows import chunks, insert_rows, update_rows
from etl.store.schema import action_attempts, actions, dispatch_sites, dispatches, programs, sites

__all__ = ["Claimed", "Result", "claim", "due_now", "record", "release", "renew"]

# a restore is retried this many times at most; a curtail, for as long as its dispatch is active
RESTORE_MAX_ATTEMPTS = 10
MAX_BACKOFF = timedelta(hours=1)


S = ActionState


@dataclass(frozen=True)
class Claimed:
    action_id: int
    episode: int
    attempt: int
    request: ActionRequest


def claim(engine: Engine, worker: str, limit: int, settings: ProcessorSettings) -> list[Claimed]:
    """Up to `limit` due actions, now claimed by `worker`, each with a new attempt row."""
    with write_transaction(engine) as conn:
        now = utcnow()
        due = _due(now).limit(limit)
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list(conn.execute(due).scalars())
        if not ids:
            return []
        claimed = _requests(conn, ids)
        until = now + timedelta(seconds=settings.claim_timeout)
        sent = [
            Taken(c.action_id, c.attempt, c.request.test, c.request.commitment_kw) for c in claimed
        ]
        take(conn, worker, sent, now, until)
        taken_over = _abandon_open_attempts(conn, [c for c in claimed if c.attempt > 1], now)
        insert_rows(
            conn,
            action_attempts,
            [
                {"action_id": c.action_id, "number": c.attempt, "worker": worker, "started_at": now}
                for c in claimed
            ],
        )
        append_events(
            conn,
            [
                _event(
                    c,
                    S.CLAIMED,
                    worker=worker,
                    attempt=c.attempt,
                    taken_over=c.action_id in taken_over,
                )
                for c in claimed
            ],
            now,
        )
        return claimed


def _abandon_open_attempts(conn: Connection, claimed: list[Claimed], now: datetime) -> set[int]:
    """The actions among these (claimed again) whose last attempt has no outcome: its process
    stopped before recording one. That attempt is marked abandoned."""
    if not claimed:
        return set()
    return set(
        conn.execute(
            update(action_attempts)
            .where(
                action_attempts.c.action_id.in_([c.action_id for c in claimed]),
                action_attempts.c.outcome.is_(None),
            )
            .values(
                outcome=AttemptOutcome.ABANDONED,
                finished_at=now,
                error="its process stopped before recording an outcome; taken over",
            )
            .returning(action_attempts.c.action_id)
        ).scalars()
    )


def _due(now: datetime) -> Select[int]:
    """The actions a claim takes now, in the order it takes them."""
    return (
        select(actions.c.id)
        .where(
            OPEN,
            actions.c.state.in_(CLAIMABLE),
            actions.c.available_at <= now,
            ~_older_opposite_under_way(),
        )
        .order_by(actions.c.available_at, actions.c.id)
    )


def due_now(conn: Connection) -> list[Claimed]:
    """What a claim would take now (for a dry run: nothing is claimed)."""
    ids = list(conn.execute(_due(utcnow())).scalars())
    return _requests(conn, ids) if ids else []


def _older_opposite_under_way() -> Any:
    other = actions.alias("other")
    return (
        select(other.c.id)
        .where(
            other.c.finished_at.is_(None),
            other.c.site_id == actions.c.site_id,
            other.c.id < actions.c.id,
            other.c.kind != actions.c.kind,
            other.c.state.in_(UNDER_WAY),
        )
        .exists()
    )


def _requests(conn: Connection, ids: list[int]) -> list[Claimed]:
    """The handler's requests for these actions, each the attempt a claim makes now. A restore
    undoes what its curtail did: it
    carries the test flag and commitment that its curtail's last claim sent, not the dispatch's
    current ones (a dispatch made a test after its curtail must still restore the site)."""
    curtail = actions.alias("curtail")
    # only a curtail claimed since revision 0012 recorded what it sent
    sent = curtail.c.test.is_not(None)
    rows = conn.execute(
        select(
            actions.c.id,
            actions.c.kind,
            actions.c.episode,
            actions.c.attempts,
            actions.c.idempotency_key,
            actions.c.dispatch_id,
            actions.c.site_id,
            sites.c.name.label("site_name"),
            sites.c.customer_location_id,
            case((sent, curtail.c.commitment_kw), else_=dispatch_sites.c.commitment_kw).label(
                "commitment_kw"
            ),
            case((sent, curtail.c.test), else_=dispatches.c.test).label("test"),
            dispatches.c.start_time,
            dispatches.c.end_time,
            programs.c.id.label("program_id"),
            programs.c.name.label("program_name"),
            dispatches.c.metadata,
        )
        .select_from(
            WITH_DISPATCH_SITE.join(sites, sites.c.id == actions.c.site_id)
            .join(programs, programs.c.id == dispatches.c.program_id)
            .outerjoin(
                curtail,
                and_(
                    actions.c.kind == ActionKind.RESTORE,
                    curtail.c.kind == ActionKind.CURTAIL,
                    curtail.c.dispatch_id == actions.c.dispatch_id,
                    curtail.c.site_id == actions.c.site_id,
                    curtail.c.episode == actions.c.episode,
                ),
            )
        )
        .where(actions.c.id.in_(ids))
        .order_by(actions.c.dispatch_id, actions.c.site_id)
    ).all()
    unmodeled = _unmodeled(conn, {row.dispatch_id for row in rows})
    return [
        Claimed(
            action_id=row.id,
            episode=row.episode,
            attempt=row.attempts + 1,
            request=ActionRequest(
                action=ActionKind(row.kind),
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
                attempt=row.attempts + 1,
                metadata=row.metadata,
                unmodeled=unmodeled[row.dispatch_id].of(row.site_id)
                if row.dispatch_id in unmodeled
                else {},
            ),
        )
        for row in rows
    ]


def _unmodeled(conn: Connection, dispatch_ids: set[str]) -> dict[str, Unmodeled]:
    """What each of these dispatches' records holds that etl does not model (its record as
    sent, kept when it has any), read and parsed once for all its sites."""
    rows = conn.execute(
        select(dispatches.c.id, dispatches.c.raw).where(
            dispatches.c.id.in_(dispatch_ids), dispatches.c.raw.is_not(None)
        )
    )
    return {row.id: Unmodeled(json.loads(row.raw)) for row in rows}


def renew(engine: Engine, worker: str, held: list[Claimed], settings: ProcessorSettings) -> None:
    """Extend the claims that `worker` still holds on these actions by a claim timeout from now:
    a live process keeps its actions while their handlers run and their outcomes wait to be
    written, so that only a process that stopped loses them."""
    if not held:
        return
    with write_transaction(engine) as conn:
        until = utcnow() + timedelta(seconds=settings.claim_timeout)
        renew_claims(conn, worker, [(c.action_id, c.attempt) for c in held], until)


NOT_STARTED = "not started: its process was stopping; its claim was let go for another to take"


def release(engine: Engine, worker: str, unstarted: list[Claimed]) -> None:
    """Let go of the claims of actions whose handler was never called (a pass told to stop
    with calls still queued): each due again at once, for any process to take with its next
    attempt, and its attempt row says why it ended without a call."""
    if not unstarted:
        return
    with write_transaction(engine) as conn:
        now = utcnow()
        ours = still_claimed(conn, worker, [(c.action_id, c.attempt) for c in unstarted])
        let_go = [c for c in unstarted if c.action_id in ours]
        expire_claims(conn, [c.action_id for c in let_go], now)
        ended = {"finished_at": now, "outcome": AttemptOutcome.ABANDONED, "error": NOT_STARTED}
        rows = [{"action_id": c.action_id, "number": c.attempt, **ended} for c in let_go]
        update_rows(conn, action_attempts, rows, ["action_id", "number"])


@dataclass(frozen=True)
class Result:
    """How a handler call ended: its output, or its error when `failed`."""

    claimed: Claimed
    said: str
    failed: bool


def record(
    engine: Engine, worker: str, results: list[Result], settings: ProcessorSettings
) -> list[bool]:
    """Record how these attempts ended, in one transaction: a success's curtail then awaits its
    restore; a failure is retried with backoff, or given up (`_failures`). Each is False when its
    claim had been taken over meanwhile: its attempt row says so, and the action's state is the
    new owner's to set."""
    with write_transaction(engine) as conn:
        now = utcnow()
        # the actions' rows locked first, then their attempts', in the order a claim takes them:
        # the other order could deadlock with a claim taking one of them over
        ours = still_claimed(
            conn, worker, [(r.claimed.action_id, r.claimed.attempt) for r in results]
        )
        _finish_attempts(conn, results, now)
        succeeded = [r.claimed for r in results if not r.failed and r.claimed.action_id in ours]
        set_succeeded(conn, [c.action_id for c in succeeded], now)
        new_events = [_event(c, S.SUCCEEDED, attempt=c.attempt) for c in succeeded]
        cured = [c for c in succeeded if c.request.action == ActionKind.CURTAIL]
        new_events += restores_owed(conn, [_episode_of(c) for c in cured], now)
        for result in results:
            if result.claimed.action_id not in ours:
                _note_overtaken(conn, result)
        failed = [
            (r.claimed, kept(r.said)) for r in results if r.failed and r.claimed.action_id in ours
        ]
        new_events += _failures(conn, failed, now, settings)
        append_events(conn, new_events, now)
    return [r.claimed.action_id in ours for r in results]


def _failures(
    conn: Connection,
    failed: list[tuple[Claimed, str]],
    now: datetime,
    settings: ProcessorSettings,
) -> list[NewEvent]:
    """Failed attempts, each with its error, of actions still ours: each retried with
    exponential backoff, unless there is no point: a curtail whose episode is over (its restore
    is owed all the same: the attempt may have reached the site), a restore of a site held again
    (whose holder then owes the restore), or a restore after RESTORE_MAX_ATTEMPTS. Read and
    written for all at once (a gateway down fails a fleet's every site in one pass)."""
    held = _episodes_held(conn, [c for c, _ in failed if c.request.action == ActionKind.CURTAIL])
    holders = _newer_curtails(
        conn, [c for c, _ in failed if c.request.action == ActionKind.RESTORE]
    )
    finals: list[tuple[int, ActionState, str]] = []
    retries: list[tuple[int, str, datetime]] = []
    owed: list[tuple[str, str, int]] = []
    new_events: list[NewEvent] = []
    for claimed, error in failed:
        attempt, request = claimed.attempt, claimed.request
        holder = holders.get(claimed.action_id)
        if request.action == ActionKind.CURTAIL and claimed.action_id not in held:
            state = S.FAILED
            note = f"gave up after {attempt} failed attempts: the dispatch no longer holds the site"
            owed.append(_episode_of(claimed))
        elif holder is not None:
            state, note = S.SUPERSEDED, f"dispatch {holder.dispatch_id} holds the site again"
            owed.append((holder.dispatch_id, holder.site_id, holder.episode))
        elif request.action == ActionKind.RESTORE and attempt >= RESTORE_MAX_ATTEMPTS:
            state, note = S.FAILED, f"gave up after {attempt} failed attempts"
        else:
            delay = timedelta(seconds=settings.retry_backoff * 2 ** (attempt - 1))
            retry_at = now + min(delay, MAX_BACKOFF)
            retries.append((claimed.action_id, error, retry_at))
            retry = format_rfc3339(retry_at)
            new_events.append(
                _event(claimed, S.RETRYING, attempt=attempt, error=error, retry_at=retry)
            )
            continue
        finals.append((claimed.action_id, state, note))
        new_events.append(_event(claimed, state, attempt=attempt, error=error, note=note))
    set_final(conn, finals, now)
    set_retrying(conn, retries)
    return new_events + restores_owed(conn, owed, now)


def _episode_of(claimed: Claimed) -> tuple[str, str, int]:
    return claimed.request.dispatch_id, claimed.request.site_id, claimed.episode


def kept(text: str) -> str:
    """What a handler said, as its record keeps it: NUL (which PostgreSQL's text and jsonb
    refuse) and unpaired surrogates (which no database encodes) escaped, as `\\x00` and
    `\\udc80`, alike on both databases; the credentials of any URL in it masked; at most its
    last KEPT_OUTPUT_CHARS characters."""
    escaped = text.replace("\0", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return redact_text(escaped)[-KEPT_OUTPUT_CHARS:]


def _episodes_held(conn: Connection, curtails: list[Claimed]) -> set[int]:
    """Those of these curtails whose dispatch the planner last saw hold the site in their
    episode."""
    pairs: dict[tuple[str, str], list[Claimed]] = {}  # a pair's episodes may fail together
    for curtail in curtails:
        pairs.setdefault((curtail.request.dispatch_id, curtail.request.site_id), []).append(curtail)
    held = set()
    ds = dispatch_sites.c
    for chunk in chunks(pairs):
        rows = conn.execute(
            select(ds.dispatch_id, ds.site_id, ds.holding, ds.episode).where(
                tuple_(ds.dispatch_id, ds.site_id).in_(chunk)
            )
        )
        for row in rows:
            for curtail in pairs[(row.dispatch_id, row.site_id)]:
                if row.holding == Holding.HELD and row.episode == curtail.episode:
                    held.add(curtail.action_id)
    return held


@dataclass(frozen=True)
class _Holder:
    dispatch_id: str
    site_id: str
    episode: int


def _newer_curtails(conn: Connection, restores: list[Claimed]) -> dict[int, _Holder]:
    """For each of these restores whose site is held again, the holder: a curtail of its site
    planned after it (the first) and still under way."""
    later: dict[str, list[tuple[int, _Holder]]] = {}
    for chunk in chunks({c.request.site_id for c in restores}):
        rows = conn.execute(
            select(actions.c.id, actions.c.dispatch_id, actions.c.site_id, actions.c.episode)
            .where(
                OPEN,
                actions.c.site_id.in_(chunk),
                actions.c.kind == ActionKind.CURTAIL,
                actions.c.state.in_(UNDER_WAY),
            )
            .order_by(actions.c.id)
        )
        for row in rows:
            holder = _Holder(row.dispatch_id, row.site_id, row.episode)
            later.setdefault(row.site_id, []).append((row.id, holder))
    holders = {}
    for restore in restores:
        newer = [h for i, h in later.get(restore.request.site_id, []) if i > restore.action_id]
        if newer:
            holders[restore.action_id] = newer[0]
    return holders


def _finish_attempts(conn: Connection, results: list[Result], now: datetime) -> None:
    rows = [
        {
            "action_id": r.claimed.action_id,
            "number": r.claimed.attempt,
            "finished_at": now,
            "outcome": AttemptOutcome.FAILED if r.failed else AttemptOutcome.SUCCEEDED,
            "output": None if r.failed else kept(r.said),
            "error": kept(r.said) if r.failed else None,
        }
        for r in results
    ]
    update_rows(conn, action_attempts, rows, ["action_id", "number"])


OVERTAKEN = (
    "its outcome came after its claim had expired and another process had taken the action over"
)


def _note_overtaken(conn: Connection, result: Result) -> None:
    """Say on a late attempt's record why its outcome did not count (the process that took the
    action over marked it abandoned, thinking its process had died), after its own error."""
    error = f"{kept(result.said)}; {OVERTAKEN}" if result.failed else OVERTAKEN
    conn.execute(
        update(action_attempts)
        .where(
            action_attempts.c.action_id == result.claimed.action_id,
            action_attempts.c.number == result.claimed.attempt,
        )
        .values(error=kept(error))
    )


def _event(claimed: Claimed, state: str, **details: object) -> NewEvent:
    request = claimed.request
    return event(
        request.action,
        request.dispatch_id,
        request.site_id,
        claimed.episode,
        request.idempotency_key,
        state,
        **details,
    )
