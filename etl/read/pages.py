"""What the web console's pages show (etl.console draws them): each page's facts as plain rows
and dataclasses, its own rows read in one snapshot (the audit trail, the chart and the metered
response each in a read of their own). Nothing here formats or escapes: the templates do.

A site's commanded state on a dispatch is read from its latest action: what etl last told the
site to do for that dispatch, and how that went.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, or_, select

from etl.handlers import ActionKind
from etl.read.audit import AuditQuery, describe, trail
from etl.read.chart import chart_data, render
from etl.read.reports import (
    ReportFilter,
    curtailment_log,
    dispatch_performance,
    dispatch_summary,
    dispatches_report,
    listed_sites,
    performance_report,
    stream,
)
from etl.store import schema
from etl.store.db import read_transaction
from etl.store.rows import chunks
from etl.store.schema import action_attempts, actions, sites
from etl.store.vocabulary import ActionState

__all__ = [
    "DispatchPage",
    "MonthRow",
    "SitePage",
    "SiteState",
    "dispatch_page",
    "history",
    "now_and_next",
    "programs",
    "site_page",
]

MOST_DISPATCHES = 200  # on one page: "now and next", or a site's latest
DONE = {ActionKind.CURTAIL: "curtailed", ActionKind.RESTORE: "restored"}
NOT_SENT = (ActionState.PENDING, ActionState.WAITING)


@dataclass(frozen=True)
class SiteState:
    site_id: str
    name: str
    commitment_kw: float | None
    commanded: str  # curtailed, restored, "curtail failed", "restore claimed"..., or "none"


@dataclass(frozen=True)
class Attempt:
    number: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class Action:
    site_id: str
    kind: str
    episode: int
    state: str
    note: str | None
    idempotency_key: str
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class DispatchPage:
    summary: dict[str, Any]  # its row of the view dispatch_summary
    sites: list[SiteState]
    timeline: list[tuple[datetime, str]]  # (when, the audit trail's line)
    chart_svg: str
    performance: list[dict[str, Any]]  # its rows of `etl report performance`
    actions: list[Action]


@dataclass(frozen=True)
class SitePage:
    site: dict[str, Any]  # its row of `sites`
    dispatches: list[dict[str, Any]]  # its latest, newest first, as dispatch_summary has them
    performance: list[dict[str, Any]]  # its metered response to each ended dispatch
    failures: list[dict[str, Any]]  # its failed and missed actions, as curtailment_log has them


@dataclass
class MonthRow:
    month: str  # YYYY-MM in the program's time zone
    dispatches: int = 0
    committed_kw: float = 0.0
    measured_commitment_kw: float = 0.0  # of the (dispatch, site) pairs with a measured delivery
    delivered_kw: float = 0.0

    @property
    def delivered_pct(self) -> float | None:
        if not self.measured_commitment_kw:
            return None
        return 100.0 * self.delivered_kw / self.measured_commitment_kw


def commanded(latest_first: list[tuple[str, str]]) -> str:
    """A site's state for people, from its actions on one dispatch (kind, state), latest first:
    the latest that was sent or settled; one only planned (a restore waiting for the end) does
    not change what the site was told."""
    if not latest_first:
        return "none"
    kind, state = next(((k, s) for k, s in latest_first if s not in NOT_SENT), latest_first[0])
    if state == ActionState.SUCCEEDED:
        return DONE[ActionKind(kind)]
    return f"{kind} {state}"


def now_and_next(engine: Engine, now: datetime) -> list[tuple[dict[str, Any], list[SiteState]]]:
    """The dispatches under way or still to come (not cancelled), soonest first, each with its
    sites' states."""
    v = dispatch_summary
    query = (
        select(v)
        .where(or_(v.c.end_time.is_(None), v.c.end_time > now))
        .order_by(v.c.start_time, v.c.dispatch_id)
        .limit(MOST_DISPATCHES)
    )
    with read_transaction(engine, one_snapshot=True) as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
        states = _site_states(conn, [row["dispatch_id"] for row in rows])
    return [(row, states.get(row["dispatch_id"], [])) for row in rows]


def dispatch_page(engine: Engine, dispatch_id: str) -> DispatchPage | None:
    with read_transaction(engine, one_snapshot=True) as conn:
        summary = conn.execute(
            select(dispatch_summary).where(dispatch_summary.c.dispatch_id == dispatch_id)
        ).first()
        if summary is None:
            return None
        states = _site_states(conn, [dispatch_id]).get(dispatch_id, [])
        taken = _actions(conn, dispatch_id)
    timeline = [
        (event["occurred_at"], describe(event))
        for event in trail(engine, AuditQuery(dispatch_id=dispatch_id))
    ]
    performance = list(
        stream(
            engine,
            performance_report(ReportFilter()).where(
                dispatch_performance.c.dispatch_id == dispatch_id
            ),
        )
    )
    return DispatchPage(
        summary._asdict(),
        states,
        timeline,
        render(chart_data(engine, dispatch_id)),
        performance,
        taken,
    )


def site_page(engine: Engine, site_id: str) -> SitePage | None:
    with read_transaction(engine, one_snapshot=True) as conn:
        site = conn.execute(select(sites).where(sites.c.id == site_id)).first()
        if site is None:
            return None
        latest = dispatches_report(ReportFilter(site_id=site_id))
        latest = latest.order_by(None).order_by(dispatch_summary.c.start_time.desc())
        recent = [dict(row) for row in conn.execute(latest.limit(MOST_DISPATCHES)).mappings()]
        failed = conn.execute(
            select(curtailment_log)
            .where(
                curtailment_log.c.site_id == site_id,
                curtailment_log.c.state.in_([ActionState.FAILED, ActionState.MISSED]),
            )
            .order_by(curtailment_log.c.finished_at.desc())
            .limit(MOST_DISPATCHES)
        )
        failures = [dict(row) for row in failed.mappings()]
    performance = list(stream(engine, performance_report(ReportFilter(site_id=site_id))))
    return SitePage(site._asdict(), recent, performance, failures)


def history(engine: Engine, f: ReportFilter) -> list[MonthRow]:
    """Dispatches by month of their start (in their program's zone), oldest first: how many,
    the kW committed, and the kW delivered as a share of the commitment measured."""
    months: dict[str, MonthRow] = {}
    month_of: dict[str, str] = {}
    with read_transaction(engine, one_snapshot=True) as conn:
        for row in conn.execute(dispatches_report(f)).mappings():
            month = (row["start_date_local"] or row["start_time"].date().isoformat())[:7]
            month_of[row["dispatch_id"]] = month
            entry = months.setdefault(month, MonthRow(month))
            entry.dispatches += 1
            entry.committed_kw += row["committed_kw"] or 0.0
        for row in conn.execute(performance_report(f)).mappings():
            month = month_of.get(row["dispatch_id"])
            if month is None or row["delivered_kw"] is None or row["commitment_kw"] is None:
                continue
            months[month].delivered_kw += row["delivered_kw"]
            months[month].measured_commitment_kw += row["commitment_kw"]
    return [months[month] for month in sorted(months)]


def _site_states(conn: Connection, dispatch_ids: list[str]) -> dict[str, list[SiteState]]:
    """Each dispatch's sites now listed, by name, with the state of its latest action."""
    a = actions.c
    taken: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for chunk in chunks(dispatch_ids):
        latest = (
            select(a.dispatch_id, a.site_id, a.kind, a.state)
            .where(a.dispatch_id.in_(chunk))
            .order_by(a.dispatch_id, a.site_id, a.id.desc())
        )
        for row in conn.execute(latest):
            taken[row.dispatch_id, row.site_id].append((row.kind, row.state))
    return {
        dispatch_id: [
            SiteState(
                site.site_id,
                site.name,
                site.commitment_kw,
                commanded(taken.get((dispatch_id, site.site_id), [])),
            )
            for site in listed
        ]
        for dispatch_id, listed in listed_sites(conn, dispatch_ids).items()
    }


def _actions(conn: Connection, dispatch_id: str) -> list[Action]:
    a, t = actions.c, action_attempts.c
    taken = {
        row.id: Action(row.site_id, row.kind, row.episode, row.state, row.note, row.idempotency_key)
        for row in conn.execute(select(actions).where(a.dispatch_id == dispatch_id).order_by(a.id))
    }
    for chunk in chunks(list(taken)):
        for row in conn.execute(
            select(action_attempts).where(t.action_id.in_(chunk)).order_by(t.action_id, t.number)
        ):
            taken[row.action_id].attempts.append(
                Attempt(
                    row.number, row.worker, row.started_at, row.finished_at, row.outcome, row.error
                )
            )
    return list(taken.values())


def programs(engine: Engine) -> list[tuple[int, str]]:
    """Every program's id and name, for choosing one."""
    with read_transaction(engine) as conn:
        rows = conn.execute(select(schema.programs.c.id, schema.programs.c.name).order_by("id"))
        return [(row.id, row.name) for row in rows]
