"""Planning: from the stored dispatches, decide which actions exist and which are due now.

The domain rules (README, "What the processor does") live here, in one transaction holding the
plan lock. Every row it creates is keyed by (dispatch, site, kind), so planning twice plans once.
Each query starts from an index: the dispatches not ended, or ended or changed since the last plan
(less a margin); the open actions by state. The history of past dispatches is never scanned.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, false, insert, or_, select, true, union, update

from etl import models
from etl.actions import (
    OPEN,
    WITH_DISPATCH_SITE,
    actions,
    dispatch_sites,
    dispatches,
    event,
    insert_new,
    new_row,
    row_event,
    set_final,
)
from etl.config import ProcessorSettings
from etl.db import write_transaction
from etl.events import NewEvent
from etl.events import append as append_events
from etl.timeutil import utcnow

PLAN_LOCK = "etl.plan"
# the first plan of a store looks back this far for dispatches to record as missed; later plans
# look back to the previous plan, less a margin for clocks that differ between machines
MISSED_LOOKBACK = timedelta(days=7)
PLAN_MARGIN = timedelta(minutes=5)

planner_state = models.PlannerState.__table__


@dataclass
class PlanSummary:
    counts: dict[str, int] = field(default_factory=dict)  # actions by the state they were put in
    events: list[NewEvent] = field(default_factory=list)

    def note(self, state: str, event: NewEvent) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        self.events.append(event)


def plan(engine: Engine, settings: ProcessorSettings) -> PlanSummary:
    with write_transaction(engine, PLAN_LOCK) as conn:
        now = utcnow()
        summary = PlanSummary()
        _new_curtails(conn, settings, now, _since_last_plan(conn, now), summary)
        _curtails_no_longer_wanted(conn, now, summary)
        _restores_now_due(conn, settings, now, summary)
        append_events(conn, summary.events, now)
        return summary


def _since_last_plan(conn: Connection, now: datetime) -> datetime:
    """Read and advance the planner's mark; return how far back this plan must look."""
    last = conn.execute(select(planner_state.c.planned_at).where(planner_state.c.id == 1)).scalar()
    if last is None:
        conn.execute(insert(planner_state).values(id=1, planned_at=now))
        return now - MISSED_LOOKBACK
    if now > last:
        conn.execute(update(planner_state).where(planner_state.c.id == 1).values(planned_at=now))
    return min(last, now) - PLAN_MARGIN


def _active_dispatch(settings: ProcessorSettings, now: datetime, d: Any = dispatches) -> Any:
    """The condition for an authorized dispatch whose window (less the lead time) holds `now`."""
    condition = and_(
        d.c.authorized == true(),
        d.c.start_time <= now + timedelta(seconds=settings.lead_time),
        or_(d.c.end_time.is_(None), d.c.end_time > now),
    )
    return condition if settings.include_test else and_(condition, d.c.test == false())


def _no_longer_holds(now: datetime) -> Any:
    """The dispatch was cancelled, has ended, or has dropped the site."""
    return or_(
        dispatches.c.authorized == false(),
        dispatches.c.end_time <= now,
        dispatch_sites.c.removed_at.is_not(None),
    )


def _new_curtails(
    conn: Connection,
    settings: ProcessorSettings,
    now: datetime,
    since: datetime,
    summary: PlanSummary,
) -> None:
    """A curtail for each site of each authorized dispatch whose window has begun; recorded as
    skipped for a test dispatch, and as missed when the window passed before etl acted."""
    # one index range each: not ended (or open-ended), ended since, changed since
    looked_at = union(
        select(dispatches.c.id).where(
            dispatches.c.authorized == true(), dispatches.c.end_time.is_(None)
        ),
        select(dispatches.c.id).where(
            dispatches.c.authorized == true(), dispatches.c.end_time > since
        ),
        select(dispatches.c.id).where(dispatches.c.updated_at > since),
    ).subquery()
    planned = (
        select(actions.c.id)
        .where(
            actions.c.dispatch_id == dispatches.c.id,
            actions.c.site_id == dispatch_sites.c.site_id,
            actions.c.kind == "curtail",
        )
        .exists()
    )
    begun = dispatches.c.start_time <= now + timedelta(seconds=settings.lead_time)
    candidates = conn.execute(
        select(dispatches.c.id, dispatch_sites.c.site_id, dispatches.c.test, dispatches.c.end_time)
        .join(looked_at, looked_at.c.id == dispatches.c.id)
        .join(dispatch_sites, dispatch_sites.c.dispatch_id == dispatches.c.id)
        .where(
            dispatches.c.authorized == true(),
            begun,
            dispatch_sites.c.removed_at.is_(None),
            ~planned,
        )
        # claims go in this order (by id): the earliest dispatch first, its sites together
        .order_by(dispatches.c.start_time, dispatches.c.id, dispatch_sites.c.site_id)
    ).all()
    rows = []
    for dispatch_id, site_id, test, end_time in candidates:
        if test and not settings.include_test:
            state, note = "skipped", "test dispatch (ETL_INCLUDE_TEST=1 acts on them)"
        elif end_time is not None and end_time <= now:
            state, note = "missed", "the dispatch window passed before etl acted"
        else:
            state, note = "pending", None
        rows.append(new_row(dispatch_id, site_id, "curtail", state, now, note))
    for row in insert_new(conn, rows):
        summary.note(row["state"], row_event(row))


def _curtails_no_longer_wanted(conn: Connection, now: datetime, summary: PlanSummary) -> None:
    """A curtail not yet done whose dispatch no longer holds the site is not run any more."""
    stale = conn.execute(
        select(
            actions.c.id,
            actions.c.dispatch_id,
            actions.c.site_id,
            actions.c.idempotency_key,
            actions.c.attempts,
            dispatches.c.authorized,
            dispatch_sites.c.removed_at,
        )
        .select_from(WITH_DISPATCH_SITE)
        .where(
            OPEN,
            actions.c.kind == "curtail",
            actions.c.state.in_(["pending", "retrying"]),
            _no_longer_holds(now),
        )
    ).all()
    for row in stale:
        if not row.authorized:
            why = "the dispatch was cancelled"
        elif row.removed_at is not None:
            why = "the dispatch dropped the site"
        else:
            why = "the dispatch window passed"
        if row.attempts:
            state, note = "failed", f"gave up after {row.attempts} failed attempts: {why}"
        elif row.authorized and row.removed_at is None:
            state, note = "missed", f"{why} before etl acted"
        else:
            state, note = "skipped", f"{why} before the curtail ran"
        set_final(conn, row.id, state, now, note)
        summary.note(state, _event(row, "curtail", state, note))


def _restores_now_due(
    conn: Connection, settings: ProcessorSettings, now: datetime, summary: PlanSummary
) -> None:
    """A waiting restore falls due when its dispatch no longer holds the site, unless another
    active dispatch does (overlap, back-to-back): then it is superseded, and that dispatch owes
    the site its restore instead."""
    due = conn.execute(
        select(actions.c.id, actions.c.dispatch_id, actions.c.site_id, actions.c.idempotency_key)
        .select_from(WITH_DISPATCH_SITE)
        .where(
            OPEN,
            actions.c.kind == "restore",
            actions.c.state == "waiting",
            _no_longer_holds(now),
        )
    ).all()
    for row in due:
        holder = _holder(conn, settings, now, row.site_id, row.dispatch_id)
        if holder is None:
            conn.execute(
                update(actions)
                .where(actions.c.id == row.id)
                .values(state="pending", available_at=now)
            )
            summary.note("pending", _event(row, "restore", "pending"))
            continue
        note = f"dispatch {holder} still holds the site"
        set_final(conn, row.id, "superseded", now, note)
        summary.note("superseded", _event(row, "restore", "superseded", note))
        for handover in insert_new(conn, [new_row(holder, row.site_id, "restore", "waiting", now)]):
            summary.note("waiting", row_event(handover))


def _holder(
    conn: Connection, settings: ProcessorSettings, now: datetime, site_id: str, other_than: str
) -> str | None:
    d2, ds2 = dispatches.alias("holder"), dispatch_sites.alias("holder_site")
    return conn.execute(
        select(d2.c.id)
        .join(ds2, ds2.c.dispatch_id == d2.c.id)
        .where(
            ds2.c.site_id == site_id,
            ds2.c.removed_at.is_(None),
            d2.c.id != other_than,
            _active_dispatch(settings, now, d2),
        )
        .order_by(d2.c.id)
        .limit(1)
    ).scalar()


def _event(row: Any, action: str, state: str, note: str | None = None) -> NewEvent:
    return event(action, row.dispatch_id, row.site_id, row.idempotency_key, state, note=note)
