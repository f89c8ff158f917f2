"""The actions that fail a site now, and those that failed it in the past and no one has
acknowledged: what `etl status`, the console, the notifications and the metrics tell of.

A curtail still to be done fails its site: from its first failed attempt it is failing
(WARNING; within its lead time too), and once the site is still not curtailed `act_within` after
it fell due (the dispatch's start, or the curtail's planning if later) it is late (CRITICAL),
whether its attempts fail or no processor takes it. A restore that is due fails its site
likewise, measured from when it fell due, and one that ended failed leaves the site curtailed:
late until someone acknowledges it or a later restore of the site succeeds. A curtail ends
failed or missed only once its dispatch let the site go, so such a curtail, and a restore
missed, are past: WARNING within the window until acknowledged (`etl ack`, etl.act.acknowledge).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from etl.base.vocabulary import ActionState, AttemptOutcome, EventKind
from etl.handlers import ActionKind
from etl.store.rows import chunks
from etl.store.schema import action_attempts, actions, dispatch_sites, dispatches, events

__all__ = ["ACT_WITHIN", "Failing", "acknowledged", "failing"]

# how long after it falls due a site may still be uncurtailed (or unrestored) before it is
# CRITICAL: a minute's cron and a retry or two
ACT_WITHIN = timedelta(minutes=2)

DUE = (ActionState.PENDING, ActionState.CLAIMED, ActionState.RETRYING)  # not `waiting`: not due
ENDED_BADLY = (ActionState.FAILED, ActionState.MISSED)


@dataclass(frozen=True)
class Failing:
    action_id: int
    kind: ActionKind
    dispatch_id: str
    site_id: str
    state: ActionState
    attempts: int
    due_since: datetime
    failing_since: datetime | None  # the end of its first failed attempt (None: none failed)
    error: str | None  # its last failed attempt's error, or why it was missed
    live: bool  # its site is failed now; else it is past, until acknowledged
    late: bool  # CRITICAL: its site is still not as it should be `act_within` after it fell due


def failing(
    conn: Connection, now: datetime, window: timedelta, act_within: timedelta = ACT_WITHIN
) -> list[Failing]:
    """Each action failing its site now, then each past failure of `window` not acknowledged,
    oldest first. A handful of rows: the open actions' partial index and the recent ended."""
    a, d = actions.c, dispatches.c
    columns = [a.id, a.kind, a.dispatch_id, a.site_id, a.state, a.attempts, a.note]
    columns += [a.created_at, a.available_at, d.start_time, d.end_time]
    joined = select(*columns).join(dispatches, d.id == a.dispatch_id)
    # two seeks, each of its own index: the open actions', and the ended ones' by state and time
    rows = [
        *conn.execute(joined.where(a.finished_at.is_(None), a.state.in_(DUE))),
        *conn.execute(joined.where(a.state.in_(ENDED_BADLY), a.finished_at >= now - window)),
    ]
    tried = _attempts(conn, [row.id for row in rows if row.attempts])
    seen = acknowledged(conn, {row.dispatch_id for row in rows if row.state in ENDED_BADLY})
    found = []
    for row in rows:
        first_failed, first_started, last_error = tried.get(row.id, (None, None, None))
        if row.state in ENDED_BADLY and row.id in seen:
            continue
        ended = row.end_time is not None and row.end_time <= now
        if row.kind == ActionKind.CURTAIL:
            due = max(row.start_time, row.created_at)
            if row.state in DUE and ended:
                continue  # its window passed: the planner's next pass settles it
            # a curtail ends failed or missed only once its dispatch let the site go: past
            live = row.state in DUE
            late = live and now - due > act_within
        else:
            # due at its dispatch's end, or (released early: cancelled, the site dropped) at
            # its first attempt, or now that it waits to be taken
            released = first_started or row.available_at or row.created_at
            due = min(row.end_time, released) if ended else released
            live = row.state != ActionState.MISSED and not _restored_since(conn, row)
            # one that gave up leaves its site curtailed until someone sees to it
            late = live and (row.state == ActionState.FAILED or now - due > act_within)
        if now < due and not first_failed:
            continue  # a curtail taken within its lead time, on its way
        if not (late or first_failed or row.state in ENDED_BADLY):
            continue  # due, and on its way
        error = row.note if row.state == ActionState.MISSED else last_error
        found.append(
            Failing(
                action_id=row.id,
                kind=ActionKind(row.kind),
                dispatch_id=row.dispatch_id,
                site_id=row.site_id,
                state=ActionState(row.state),
                attempts=row.attempts,
                due_since=due,
                failing_since=first_failed,
                error=error,
                live=live,
                late=late,
            )
        )
    found += _unplanned(conn, now, act_within)
    return sorted(found, key=lambda f: (not f.live, f.due_since, f.action_id))


UNPLANNED = "no curtail planned: is `etl run` (or `etl process`) running, and planning?"


def _unplanned(conn: Connection, now: datetime, act_within: timedelta) -> list[Failing]:
    """The sites of the dispatches under way for over `act_within` that no curtail was planned
    for, not even one superseded: the planner is not running (a lock held, `etl process` down
    beside a working `etl fetch`), and nothing above would show it. Each is late, with no action
    (its id 0). Seeks: the authorized dispatches by end, their sites, each pair's curtail."""
    a, d, ds = actions.c, dispatches.c, dispatch_sites.c
    pairs = select(ds.dispatch_id, ds.site_id, d.start_time, ds.added_at).join(
        dispatches, d.id == ds.dispatch_id
    )
    pairs = pairs.where(
        d.authorized.is_(True),
        d.test.is_(False),
        d.start_time <= now - act_within,
        ds.removed_at.is_(None),
    )
    # two seeks of the authorized dispatches by end: those not ended, and those with no end
    rows = [
        *conn.execute(pairs.where(d.end_time > now)),
        *conn.execute(pairs.where(d.end_time.is_(None))),
    ]
    planned = set()
    for chunk in chunks(sorted({row.dispatch_id for row in rows})):
        found = select(a.dispatch_id, a.site_id).where(
            a.dispatch_id.in_(chunk), a.kind == ActionKind.CURTAIL
        )
        planned |= {(row.dispatch_id, row.site_id) for row in conn.execute(found)}
    # due at the start, or when the site joined the dispatch under way
    rows = [
        row
        for row in rows
        if (row.dispatch_id, row.site_id) not in planned
        and now - max(row.start_time, row.added_at) > act_within
    ]
    return [
        Failing(
            action_id=0,
            kind=ActionKind.CURTAIL,
            dispatch_id=row.dispatch_id,
            site_id=row.site_id,
            state=ActionState.PENDING,
            attempts=0,
            due_since=max(row.start_time, row.added_at),
            failing_since=None,
            error=UNPLANNED,
            live=True,
            late=True,
        )
        for row in rows
    ]


def _restored_since(conn: Connection, row: Any) -> bool:
    """Whether a restore of the same site succeeded after this one was planned: its site was
    seen to by a later dispatch's restore (a seek of the site's actions)."""
    if row.state != ActionState.FAILED:
        return False
    a = actions.c
    later = select(a.id).where(
        a.site_id == row.site_id,
        a.kind == ActionKind.RESTORE,
        a.state == ActionState.SUCCEEDED,
        a.created_at > row.created_at,
    )
    return conn.execute(later.limit(1)).first() is not None


def _attempts(
    conn: Connection, action_ids: list[int]
) -> dict[int, tuple[datetime | None, datetime | None, str | None]]:
    """For each action: the end of its first failed attempt, the start of its first attempt,
    and its last failed attempt's error."""
    t = action_attempts.c
    found: dict[int, tuple[datetime | None, datetime | None, str | None]] = {}
    if not action_ids:
        return found
    rows = conn.execute(
        select(t.action_id, t.started_at, t.finished_at, t.outcome, t.error)
        .where(t.action_id.in_(action_ids))
        .order_by(t.action_id, t.number)
    )
    for row in rows:
        first_failed, first_started, error = found.get(row.action_id, (None, None, None))
        first_started = first_started or row.started_at
        if row.outcome == AttemptOutcome.FAILED:
            first_failed, error = first_failed or row.finished_at, row.error
        found[row.action_id] = (first_failed, first_started, error)
    return found


def acknowledged(conn: Connection, dispatch_ids: set[str]) -> set[int]:
    """The ids of the actions of these dispatches that someone acknowledged (etl ack)."""
    if not dispatch_ids:
        return set()
    e = events.c
    details = conn.execute(
        select(e.details).where(
            e.kind == EventKind.ACTION_ACKNOWLEDGED, e.dispatch_id.in_(sorted(dispatch_ids))
        )
    ).scalars()
    return {detail["action_id"] for detail in details}
