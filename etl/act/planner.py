"""Planning: from the stored dispatches, decide which actions exist and which are due now.

The rule (docs/handlers.md, "What the processor does"): **a site follows its holders.** A
dispatch holds a site while it is authorized, not a test, lists the site, and `start_time - lead
<= now < end_time`. Each pass compares, for every (dispatch, site) whose holding may have changed,
whether the dispatch holds the site now with what the previous pass recorded in
`dispatch_sites.holding`:

- starts holding: a new holding episode, and its curtail;
- stops holding: the episode's restore (created when its curtail ran: succeeded, or failed
  after the handler was called) falls due, unless another dispatch holds the site now: then
  that one owes the site its restore instead.

The pure part, what a pair's change means, is `transition`; the rest reads and writes. Every row
it creates is keyed by (dispatch, site, kind, episode), so planning twice plans once. Each query
starts from an index: the pairs held at the last pass, the dispatches not ended, or ended or
changed since the last plan (less a margin), the open actions by state or site. The history of
past dispatches is never scanned.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    insert,
    or_,
    select,
    true,
    union,
    update,
)

from etl.act.actions import (
    OPEN,
    UNDER_WAY,
    WITH_DISPATCH_SITE,
    ActionKind,
    event,
    insert_new,
    new_row,
    restores_owed,
    row_event,
    set_final,
    set_pending,
)
from etl.base.config import ProcessorSettings
from etl.base.timeutil import utcnow
from etl.base.vocabulary import ActionState, Holding
from etl.store import fetch_runs, kept_counts
from etl.store.db import write_transaction
from etl.store.dispatch_sites import HoldingSet, set_holdings
from etl.store.events import NewEvent
from etl.store.events import append as append_events
from etl.store.schema import actions, dispatch_sites, dispatches, planner_state

__all__ = ["HISTORY_NOTE", "PLAN_LOCK", "Pair", "PlanSummary", "plan", "plan_in", "transition"]

PLAN_LOCK = "etl.plan"
# the first plan of a store looks back this far for dispatches whose window it never saw; later
# plans look back to the previous plan, less a margin for clocks that differ between machines
FIRST_LOOKBACK = timedelta(days=7)
PLAN_MARGIN = timedelta(minutes=5)
HISTORY_NOTE = "ended before this store's first fetch"
TEST_NOTE = "test dispatch (ETL_INCLUDE_TEST=1 acts on them)"

S, CURTAIL, RESTORE = ActionState, ActionKind.CURTAIL, ActionKind.RESTORE


@dataclass(frozen=True)
class Pair:
    """A dispatch and one of its sites, as stored, with the planner's record of it."""

    dispatch_id: str
    site_id: str
    authorized: bool
    test: bool
    start_time: datetime
    end_time: datetime | None
    removed_at: datetime | None
    holding: Holding | None
    episode: int


@dataclass(frozen=True)
class Transition:
    """What a pass records for a pair whose holding changed: its new holding and episode, and
    the curtail that a new episode begins with (state and note), if one does."""

    holding: Holding | None
    episode: int
    curtail: tuple[ActionState, str | None] | None = None


def holding_now(pair: Pair, now: datetime, settings: ProcessorSettings) -> Holding | None:
    if not pair.authorized or pair.removed_at is not None:
        return None
    if _window_start(pair, settings) > now:
        return None
    if pair.end_time is not None and pair.end_time <= now:
        return None
    return Holding.TEST if pair.test and not settings.include_test else Holding.HELD


def transition(
    pair: Pair, now: datetime, settings: ProcessorSettings, first_fetch: datetime | None
) -> Transition | None:
    """The pair's change since the last pass, or None."""
    holding = holding_now(pair, now, settings)
    if holding == Holding.HELD and pair.holding != Holding.HELD:
        return Transition(holding, pair.episode + 1, (S.PENDING, None))
    if holding == Holding.TEST and pair.holding != Holding.TEST:
        return Transition(holding, pair.episode + 1, (S.SKIPPED, TEST_NOTE))
    if holding is None and pair.holding is not None:
        return Transition(None, pair.episode)
    if holding is None and pair.episode == 0:
        return _unseen_episode(pair, now, settings, first_fetch)
    return None


def _unseen_episode(
    pair: Pair, now: datetime, settings: ProcessorSettings, first_fetch: datetime | None
) -> Transition | None:
    """A window that opened and closed between two passes, never seen open, is an episode too:
    missed, or history if it closed before the store's first fetch, or skipped for a test."""
    end = pair.end_time
    if not pair.authorized or pair.removed_at is not None or end is None or end > now:
        return None
    if _window_start(pair, settings) >= end:
        return None  # an empty window: its start was moved past its end
    if pair.test and not settings.include_test:
        return Transition(None, 1, (S.SKIPPED, TEST_NOTE))
    if first_fetch is None or end <= first_fetch:
        return Transition(None, 1, (S.SKIPPED, HISTORY_NOTE))
    return Transition(None, 1, (S.MISSED, "the dispatch window passed before etl acted"))


def _window_start(pair: Pair, settings: ProcessorSettings) -> datetime:
    return pair.start_time - timedelta(seconds=settings.lead_time)


@dataclass
class PlanSummary:
    counts: dict[str, int] = field(default_factory=dict)  # actions by the state they were put in
    events: list[NewEvent] = field(default_factory=list)

    def note(self, state: str, event: NewEvent) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        self.events.append(event)


def plan(engine: Engine, settings: ProcessorSettings) -> PlanSummary:
    with write_transaction(engine, PLAN_LOCK) as conn:
        return plan_in(conn, settings)


def plan_in(conn: Connection, settings: ProcessorSettings) -> PlanSummary:
    """Plan within the caller's transaction, which holds the plan lock."""
    now = utcnow()
    summary = PlanSummary()
    since = _since_last_plan(conn, now)
    _record_transitions(conn, settings, now, since, summary)
    _end_curtails_no_longer_wanted(conn, now, summary)
    _settle_restores(conn, now, summary)
    append_events(conn, summary.events, now)
    kept_counts.fold(conn)  # under the plan lock: one fold at a time
    return summary


def _since_last_plan(conn: Connection, now: datetime) -> datetime:
    """Read and advance the planner's mark; return how far back this plan must look."""
    last = conn.execute(select(planner_state.c.planned_at).where(planner_state.c.id == 1)).scalar()
    if last is None:
        conn.execute(insert(planner_state).values(id=1, planned_at=now))
        return now - FIRST_LOOKBACK
    if now > last:
        conn.execute(update(planner_state).where(planner_state.c.id == 1).values(planned_at=now))
    return min(last, now) - PLAN_MARGIN


PAIR_COLUMNS = (
    dispatches.c.id.label("dispatch_id"),
    dispatch_sites.c.site_id,
    dispatches.c.authorized,
    dispatches.c.test,
    dispatches.c.start_time,
    dispatches.c.end_time,
    dispatch_sites.c.removed_at,
    dispatch_sites.c.holding,
    dispatch_sites.c.episode,
)
PAIRS = dispatch_sites.join(dispatches, dispatches.c.id == dispatch_sites.c.dispatch_id)


def _pairs_to_look_at(conn: Connection, since: datetime) -> list[Pair]:
    """The pairs whose holding may have changed since the last pass: those of dispatches that
    held a site then, not ended, or ended or changed since (one index range each)."""
    looked_at = union(
        select(dispatch_sites.c.dispatch_id).where(dispatch_sites.c.holding.is_not(None)),
        select(dispatches.c.id).where(
            dispatches.c.authorized == true(), dispatches.c.end_time.is_(None)
        ),
        select(dispatches.c.id).where(
            dispatches.c.authorized == true(), dispatches.c.end_time > since
        ),
        select(dispatches.c.id).where(dispatches.c.updated_at > since),
    )
    rows = conn.execute(
        select(*PAIR_COLUMNS)
        .select_from(PAIRS)
        .where(dispatches.c.id.in_(looked_at))
        # claims go in planning order (by id): the earliest dispatch first, its sites together
        .order_by(dispatches.c.start_time, dispatches.c.id, dispatch_sites.c.site_id)
    ).all()
    return [
        Pair(**{**row._asdict(), "holding": Holding(row.holding) if row.holding else None})
        for row in rows
    ]


def _record_transitions(
    conn: Connection,
    settings: ProcessorSettings,
    now: datetime,
    since: datetime,
    summary: PlanSummary,
) -> None:
    first_fetch = fetch_runs.first_success_started_at(conn)
    changes = []
    for pair in _pairs_to_look_at(conn, since):
        change = transition(pair, now, settings, first_fetch)
        if change is not None:
            changes.append((pair, change))
    if not changes:
        return
    set_holdings(
        conn, [HoldingSet(p.dispatch_id, p.site_id, c.holding, c.episode) for p, c in changes]
    )
    curtails = [
        new_row(p.dispatch_id, p.site_id, CURTAIL, c.episode, c.curtail[0], now, c.curtail[1])
        for p, c in changes
        if c.curtail is not None
    ]
    for row in insert_new(conn, curtails):
        summary.note(row["state"], row_event(row))


def _end_curtails_no_longer_wanted(conn: Connection, now: datetime, summary: PlanSummary) -> None:
    """A curtail not yet done whose episode is over is not run any more. If the handler was
    called for it, the episode's restore is owed all the same: a failed attempt may have reached
    the site (a timeout after the controller acted, say), and a site held by none must not stay
    curtailed."""
    stale = conn.execute(
        select(
            actions.c.id,
            actions.c.dispatch_id,
            actions.c.site_id,
            actions.c.episode,
            actions.c.idempotency_key,
            actions.c.attempts,
            dispatches.c.authorized,
            dispatches.c.test,
            dispatches.c.end_time,
            dispatch_sites.c.removed_at,
        )
        .select_from(WITH_DISPATCH_SITE)
        .where(
            OPEN,
            actions.c.kind == CURTAIL,
            actions.c.state.in_([S.PENDING, S.RETRYING]),
            _episode_over(),
        )
    ).all()
    finals: list[tuple[int, ActionState, str]] = []
    owed: list[tuple[str, str, int]] = []
    for row in stale:
        why = _why_released(row, now)
        if row.attempts:
            state, note = S.FAILED, f"gave up after {row.attempts} failed attempts: {why}"
            owed.append((row.dispatch_id, row.site_id, row.episode))
        elif why == WINDOW_PASSED:
            state, note = S.MISSED, f"{why} before etl acted"
        else:
            state, note = S.SKIPPED, f"{why} before the curtail ran"
        finals.append((row.id, state, note))
        summary.note(state, _event(row, CURTAIL, state, note))
    set_final(conn, finals, now)
    for restore in restores_owed(conn, owed, now):
        summary.note(S.WAITING, restore)


WINDOW_PASSED = "the dispatch window passed"


def _why_released(row: Any, now: datetime) -> str:
    if not row.authorized:
        return "the dispatch was cancelled"
    if row.removed_at is not None:
        return "the dispatch dropped the site"
    if row.end_time is not None and row.end_time <= now:
        return WINDOW_PASSED
    if row.test:
        return "the dispatch became a test"
    return "the dispatch's start moved later"


def _settle_restores(conn: Connection, now: datetime, summary: PlanSummary) -> None:
    """Restores whose episode is over fall due, and restores not yet run for a site that is held
    again are not run. A site held by some dispatch gets no restore: that dispatch owes it the
    restore instead (overlap, back-to-back), even if its own curtail never succeeded. A site
    held by none gets one restore, however many episodes ended at once."""
    released = conn.execute(
        select(*RESTORE_COLUMNS)
        .select_from(WITH_DISPATCH_SITE)
        .where(OPEN, actions.c.kind == RESTORE, actions.c.state == S.WAITING, _episode_over())
    ).all()
    under_way = conn.execute(
        select(*RESTORE_COLUMNS).where(
            OPEN, actions.c.kind == RESTORE, actions.c.state.in_([S.PENDING, S.RETRYING])
        )
    ).all()
    holders = _holders(conn) if released or under_way else {}
    superseded: list[tuple[int, ActionState, str]] = []
    handed_over: list[tuple[str, str, int]] = []  # the holders' episodes that owe a restore now

    def supersede(row: Any, note: str) -> None:
        superseded.append((row.id, S.SUPERSEDED, note))
        summary.note(S.SUPERSEDED, _event(row, RESTORE, S.SUPERSEDED, note))

    def hand_over(row: Any, holder: tuple[str, int]) -> None:
        supersede(row, f"dispatch {holder[0]} holds the site")
        handed_over.append((holder[0], row.site_id, holder[1]))

    for row in under_way:
        if row.site_id in holders:
            hand_over(row, holders[row.site_id])
    due: list[int] = []
    covered = _restores_under_way(conn) if released else {}
    for row in released:
        if row.site_id in holders:
            hand_over(row, holders[row.site_id])
        elif row.site_id in covered:
            supersede(row, f"the restore of dispatch {covered[row.site_id]} covers it")
        else:
            due.append(row.id)
            covered[row.site_id] = row.dispatch_id  # this one covers the site from now on
            summary.note(S.PENDING, _event(row, RESTORE, S.PENDING))
    set_final(conn, superseded, now)
    set_pending(conn, due, now)
    for handover in restores_owed(conn, handed_over, now):
        summary.note(S.WAITING, handover)


RESTORE_COLUMNS = (
    actions.c.id,
    actions.c.dispatch_id,
    actions.c.site_id,
    actions.c.episode,
    actions.c.idempotency_key,
)


def _holders(conn: Connection) -> dict[str, tuple[str, int]]:
    """For each site held now, one holder: (dispatch, episode). The pairs held are few: those
    of the dispatches in their window now."""
    rows = conn.execute(
        select(dispatch_sites.c.site_id, dispatch_sites.c.dispatch_id, dispatch_sites.c.episode)
        .where(dispatch_sites.c.holding == Holding.HELD)
        .order_by(dispatch_sites.c.dispatch_id.desc())
    ).all()
    return {row.site_id: (row.dispatch_id, row.episode) for row in rows}


def _restores_under_way(conn: Connection) -> dict[str, str]:
    """For each site with a restore due, running or to be retried: one dispatch it is for."""
    rows = conn.execute(
        select(actions.c.site_id, actions.c.dispatch_id).where(
            OPEN, actions.c.kind == RESTORE, actions.c.state.in_(UNDER_WAY)
        )
    )
    return {row.site_id: row.dispatch_id for row in rows}


def _episode_over() -> Any:
    """The action's episode is not the pair's current one, or the dispatch no longer holds the
    site (`holding` is null then: hence IS DISTINCT FROM, not !=)."""
    return or_(
        dispatch_sites.c.holding.is_distinct_from(Holding.HELD),
        dispatch_sites.c.episode != actions.c.episode,
    )


def _event(row: Any, action: ActionKind, state: ActionState, note: str | None = None) -> NewEvent:
    return event(
        action, row.dispatch_id, row.site_id, row.episode, row.idempotency_key, state, note=note
    )
