"""What the web console's pages show (etl.console draws them): each page's facts as plain rows
and dataclasses, its own rows read in one snapshot (the audit trail, the chart and the metered
response each in a read of their own). Nothing here formats or escapes: the templates do.

A site's commanded state on a dispatch is read from its latest action: what etl last told the
site to do for that dispatch, and how that went. What fails a site now is etl.act.failing's, as
`etl status` tells it.

Each page shows every time in one zone, which it names: the one asked for (?tz=), else its
first dispatch's program's (on "Now and next", the soonest; on a site's page and the history,
the newest), else UTC. The audit trail's lines, and the times among their details, are shifted
there as `etl audit --tz` shifts them.

Every page is bounded, whatever the store holds: a list shows at most MOST_ROWS rows and counts
the rest (a Part), and a dispatch's sites are paged, PAGE_SITES a page, those that need an eye
first. A dispatch of 5,000 sites drawn whole was an 18 MB page that took seconds of the
server's time.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Select, func, or_, select

from etl.act.failing import Failing, failing
from etl.base.timeutil import time_shift, utcnow, zone_or_utc
from etl.base.vocabulary import ActionState
from etl.handlers import ActionKind
from etl.read.audit import AuditQuery, describe, trail
from etl.read.chart import FAILED, chart_data, render
from etl.read.output import shift_times
from etl.read.reports import (
    APART,
    ReportFilter,
    curtailment_log,
    dispatch_performance,
    dispatch_summary,
    dispatches_report,
    listed_sites,
    performance_report,
    standing,
    stream,
)
from etl.store import schema
from etl.store.db import read_transaction
from etl.store.rows import chunks
from etl.store.schema import action_attempts, actions, sites

__all__ = [
    "MOST_OPEN",
    "MOST_ROWS",
    "PAGE_SITES",
    "Card",
    "DispatchPage",
    "HistoryPage",
    "MonthRow",
    "NowPage",
    "Part",
    "SitePage",
    "SiteState",
    "dispatch_page",
    "history",
    "history_page",
    "known_zone",
    "latest_months",
    "now_and_next",
    "programs",
    "site_page",
]

MOST_ROWS = 100  # of any one list on a page: the others are counted, not listed
PAGE_SITES = 100  # of a dispatch's sites on one page of its own (?page=)
MOST_ATTEMPTS = 5  # of an action's attempts on its dispatch's page: its latest
# a dispatch's sites shown on "now and next": its failing ones, then its pending ones, up to
# this many; the others are counted, and listed on its own page, so that a 200-site dispatch
# does not push the next one out of sight
MOST_OPEN = 10
DONE = {ActionKind.CURTAIL: "curtailed", ActionKind.RESTORE: "restored"}
NOT_SENT = (ActionState.PENDING, ActionState.WAITING)
# a site's standing on a dispatch, in the order shown: the first two need someone's eye
STANDINGS = ("failing", "pending", "curtailed", "restored", "skipped", "superseded")


Row = TypeVar("Row")


@dataclass(frozen=True)
class Part(Generic[Row]):
    """The rows shown of a list that may be long, and how many it has in all."""

    rows: list[Row]
    total: int

    @property
    def more(self) -> int:
        """How many are not shown."""
        return self.total - len(self.rows)


def _part(rows: list[Row]) -> Part[Row]:
    return Part(rows[:MOST_ROWS], len(rows))


def _first(conn: Connection, query: Select[Any]) -> Part[dict[str, Any]]:
    """The query's first MOST_ROWS rows, and how many it has: counted only if it may have more."""
    rows = [dict(row) for row in conn.execute(query.limit(MOST_ROWS)).mappings()]
    total = len(rows)
    if total == MOST_ROWS:
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        total = conn.execute(counted).scalar_one()
    return Part(rows, total)


@dataclass(frozen=True)
class SiteState:
    site_id: str
    name: str
    commitment_kw: float | None
    commanded: str  # curtailed, restored, "curtail failed", "restore claimed"..., or "none"
    standing: str  # one of STANDINGS


@dataclass(frozen=True)
class Card:
    """A dispatch on "now and next"."""

    summary: dict[str, Any]  # its row of the view dispatch_summary
    sites: Part[SiteState]  # those shown: failing first, then pending (by name within)
    counts: dict[str, int]  # how many of its sites have each standing


@dataclass(frozen=True)
class NowPage:
    zone: str
    failing: Part[Failing]  # the actions failing a site now, oldest first
    past: Part[Failing]  # those that ended failed or missed, not acknowledged
    site_names: dict[str, str]  # of the sites of `failing` and `past` shown
    cards: Part[Card]  # the dispatches under way or to come, and those a restore fails


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
    attempts: Part[Attempt]  # its latest MOST_ATTEMPTS, in order


@dataclass(frozen=True)
class DispatchPage:
    zone: str
    summary: dict[str, Any]  # its row of the view dispatch_summary
    counts: dict[str, int]  # how many of its sites have each standing
    number: int  # which page of its sites this is, from 1
    pages: int
    sites: list[SiteState]  # this page's: failing first, then pending, then the others
    # the dispatch as a whole, on its first page only (its chart reads every site's readings)
    timeline: Part[tuple[datetime, str]] | None  # (when, the audit trail's line), oldest first
    chart_svg: str | None
    performance: list[dict[str, Any]]  # this page's sites' rows of `etl report performance`
    actions: list[Action]  # of this page's sites

    @property
    def first(self) -> int:
        """The position of the page's first site among the dispatch's, from 1."""
        return (self.number - 1) * PAGE_SITES + 1


@dataclass(frozen=True)
class SitePage:
    zone: str
    site: dict[str, Any]  # its row of `sites`
    dispatches: Part[dict[str, Any]]  # its latest, newest first, as dispatch_summary has them
    performance: Part[dict[str, Any]]  # its metered response to each ended dispatch, newest first
    failing: Part[Failing]  # its actions failing it now
    failures: Part[dict[str, Any]]  # its other failed and missed actions, as curtailment_log has


@dataclass
class MonthRow:
    """A month of the history: its dispatches, as many as `etl report dispatches` gives, of
    which those cancelled, test and upcoming count apart (reports.standing); the kW are the
    others'."""

    month: str  # YYYY-MM in the program's time zone
    dispatches: int = 0
    cancelled: int = 0
    test: int = 0
    upcoming: int = 0
    committed_kw: float = 0.0
    measured_commitment_kw: float = 0.0  # of the (dispatch, site) pairs with a measured delivery
    delivered_kw: float | None = None  # None: none measured yet

    @property
    def delivered_pct(self) -> float | None:
        if self.delivered_kw is None or not self.measured_commitment_kw:
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


def known_zone(name: str) -> bool:
    """Whether `name` is a time zone known here (`UTC` is)."""
    return isinstance(zone_or_utc(name), ZoneInfo)


def _page_zone(asked: str | None, first_program_zone: str | None) -> str:
    return next((name for name in (asked, first_program_zone) if name and known_zone(name)), "UTC")


def now_and_next(
    engine: Engine, now: datetime, window: timedelta, act_within: timedelta, tz: str | None
) -> NowPage:
    """What fails a site now, then the past failures of `window` not acknowledged; then the
    dispatches under way or still to come, and those ended whose restore fails a site, soonest
    first, each with its sites' states."""
    v = dispatch_summary
    with read_transaction(engine, one_snapshot=True) as conn:
        found = failing(conn, now, window, act_within)
        live = [f for f in found if f.live]
        live_shown, past_shown = _part(live), _part([f for f in found if not f.live])
        query = (
            select(v)
            .where(
                or_(
                    v.c.end_time.is_(None),
                    v.c.end_time > now,
                    v.c.dispatch_id.in_(sorted({f.dispatch_id for f in live})),
                )
            )
            .order_by(v.c.start_time, v.c.dispatch_id)
        )
        rows = _first(conn, query)
        states = _site_states(conn, [row["dispatch_id"] for row in rows.rows], live)
        names = _site_names(conn, {f.site_id for f in live_shown.rows + past_shown.rows})
    cards = [_card(row, states.get(row["dispatch_id"], [])) for row in rows.rows]
    zone = _page_zone(tz, rows.rows[0]["timezone"] if rows.rows else None)
    return NowPage(zone, live_shown, past_shown, names, Part(cards, rows.total))


def _ordered(states: list[SiteState]) -> tuple[list[SiteState], dict[str, int]]:
    """A dispatch's sites, failing first, then pending, then the others (stable: by name within),
    and how many have each standing."""
    ordered = sorted(states, key=lambda site: STANDINGS.index(site.standing))
    found = Counter(site.standing for site in states)
    return ordered, {name: found[name] for name in STANDINGS}


def _card(summary: dict[str, Any], states: list[SiteState]) -> Card:
    ordered, counts = _ordered(states)
    if len(ordered) <= MOST_OPEN:
        return Card(summary, Part(ordered, len(ordered)), counts)
    needing = min(counts["failing"] + counts["pending"], MOST_OPEN)
    return Card(summary, Part(ordered[:needing], len(ordered)), counts)


def dispatch_page(
    engine: Engine,
    dispatch_id: str,
    now: datetime,
    window: timedelta,
    act_within: timedelta,
    tz: str | None,
    number: int = 1,
) -> DispatchPage | None:
    """The dispatch, with page `number` of its sites (the last, if there are fewer) and their
    actions and measures; on the first, its chart and the start of its audit trail."""
    with read_transaction(engine, one_snapshot=True) as conn:
        summary = conn.execute(
            select(dispatch_summary).where(dispatch_summary.c.dispatch_id == dispatch_id)
        ).first()
        if summary is None:
            return None
        live = [f for f in failing(conn, now, window, act_within) if f.live]
        ordered, counts = _ordered(_site_states(conn, [dispatch_id], live).get(dispatch_id, []))
        pages = max(1, math.ceil(len(ordered) / PAGE_SITES))
        number = min(number, pages)
        shown = ordered[(number - 1) * PAGE_SITES : number * PAGE_SITES]
        shown_ids = [site.site_id for site in shown]
        taken = _actions(conn, dispatch_id, shown_ids)
    zone = _page_zone(tz, summary.timezone)
    d = dispatch_performance.c
    performance = list(
        stream(
            engine,
            performance_report(ReportFilter()).where(
                d.dispatch_id == dispatch_id, d.site_id.in_(shown_ids)
            ),
        )
    )
    whole = number == 1
    return DispatchPage(
        zone,
        summary._asdict(),
        counts,
        number,
        pages,
        shown,
        _timeline(engine, dispatch_id, zone) if whole else None,
        render(replace(chart_data(engine, dispatch_id), zone=zone_or_utc(zone))) if whole else None,
        performance,
        taken,
    )


def _timeline(engine: Engine, dispatch_id: str, zone: str) -> Part[tuple[datetime, str]]:
    """The first MOST_ROWS lines of the dispatch's audit trail, and how many it has: read to its
    end (0.2 s for 20,000 events), as a trail left early keeps its cursor open. Each line's time
    and the times among its details in `zone`, as `etl audit --tz ZONE` shows them."""
    told: list[tuple[datetime, str]] = []
    total = 0
    shift = time_shift(zone)
    events = trail(engine, AuditQuery(dispatch_id=dispatch_id))
    for event in shift_times(events, shift, lambda row: row["timezone"]):
        if total < MOST_ROWS:
            told.append((event["occurred_at"], describe(event, shift)))
        total += 1
    return Part(told, total)


def site_page(
    engine: Engine,
    site_id: str,
    now: datetime,
    window: timedelta,
    act_within: timedelta,
    tz: str | None,
) -> SitePage | None:
    with read_transaction(engine, one_snapshot=True) as conn:
        site = conn.execute(select(sites).where(sites.c.id == site_id)).first()
        if site is None:
            return None
        latest = dispatches_report(ReportFilter(site_id=site_id))
        recent = _first(conn, latest.order_by(None).order_by(dispatch_summary.c.start_time.desc()))
        live = [
            f for f in failing(conn, now, window, act_within) if f.live and f.site_id == site_id
        ]
        failures = _first(
            conn,
            select(curtailment_log)
            .where(
                curtailment_log.c.site_id == site_id,
                curtailment_log.c.state.in_([ActionState.FAILED, ActionState.MISSED]),
                curtailment_log.c.action_id.not_in([f.action_id for f in live]),
            )
            .order_by(curtailment_log.c.finished_at.desc()),
        )
        measured = performance_report(ReportFilter(site_id=site_id))
        performance = _first(
            conn, measured.order_by(None).order_by(dispatch_performance.c.start_time.desc())
        )
    zone = _page_zone(tz, recent.rows[0]["timezone"] if recent.rows else None)
    return SitePage(zone, site._asdict(), recent, performance, _part(live), failures)


@dataclass(frozen=True)
class HistoryPage:
    zone: str  # of the times on the page (its months are each dispatch's in its program's)
    months: Part[MonthRow]


def history_page(engine: Engine, f: ReportFilter, tz: str | None) -> HistoryPage:
    """The history's latest months, and the page's zone: the one asked for, else the newest
    dispatch's program's."""
    v = dispatch_summary.c
    newest = dispatches_report(f).order_by(None).order_by(v.start_time.desc()).limit(1)
    with read_transaction(engine) as conn:
        row = conn.execute(newest).mappings().first()
    zone = _page_zone(tz, row["timezone"] if row else None)
    return HistoryPage(zone, latest_months(engine, f))


def latest_months(engine: Engine, f: ReportFilter) -> Part[MonthRow]:
    """The history page's months: the latest MOST_ROWS, and how many there are."""
    every = history(engine, f)
    return Part(every[-MOST_ROWS:], len(every))


def history(engine: Engine, f: ReportFilter) -> list[MonthRow]:
    """Dispatches by month of their start (in their program's zone), oldest first: how many,
    of which cancelled, test and upcoming, and of the others the kW committed and the kW
    delivered as a share of the commitment measured."""
    months: dict[str, MonthRow] = {}
    month_of: dict[str, str] = {}
    query = dispatches_report(f).add_columns(standing(utcnow()).label("standing"))
    with read_transaction(engine, one_snapshot=True) as conn:
        for row in conn.execute(query).mappings():
            month = (row["start_date_local"] or row["start_time"].date().isoformat())[:7]
            entry = months.setdefault(month, MonthRow(month))
            entry.dispatches += 1
            kind = row["standing"]
            if kind in APART:  # counted, and in no kW
                setattr(entry, kind, getattr(entry, kind) + 1)
                continue
            month_of[row["dispatch_id"]] = month
            entry.committed_kw += row["committed_kw"] or 0.0
        for row in conn.execute(performance_report(f)).mappings():
            month = month_of.get(row["dispatch_id"])
            if month is None or row["delivered_kw"] is None or row["commitment_kw"] is None:
                continue
            entry = months[month]
            entry.delivered_kw = (entry.delivered_kw or 0.0) + row["delivered_kw"]
            entry.measured_commitment_kw += row["commitment_kw"]
    return [months[month] for month in sorted(months)]


def _site_states(
    conn: Connection, dispatch_ids: list[str], live: list[Failing]
) -> dict[str, list[SiteState]]:
    """Each dispatch's sites now listed, by name, with the state of its latest action; failing
    if `live` says an action fails it, or its latest failed."""
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
    failing_now = {(f.dispatch_id, f.site_id) for f in live}
    states: dict[str, list[SiteState]] = {}
    for dispatch_id, listed in listed_sites(conn, dispatch_ids).items():
        states[dispatch_id] = []
        for site in listed:
            said = commanded(taken.get((dispatch_id, site.site_id), []))
            fails = (dispatch_id, site.site_id) in failing_now
            state = SiteState(
                site.site_id, site.name, site.commitment_kw, said, _standing(said, fails)
            )
            states[dispatch_id].append(state)
    return states


def _standing(said: str, failing_now: bool) -> str:
    """A site's standing (STANDINGS) from what it was commanded and whether it fails now."""
    word = said.split()[-1]
    if failing_now or word in FAILED:
        return "failing"
    return word if word in STANDINGS else "pending"


def _site_names(conn: Connection, site_ids: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for chunk in chunks(sorted(site_ids)):
        rows = conn.execute(select(sites.c.id, sites.c.name).where(sites.c.id.in_(chunk)))
        names |= {row.id: row.name for row in rows}
    return names


def _actions(conn: Connection, dispatch_id: str, site_ids: list[str]) -> list[Action]:
    """The dispatch's actions on these sites, each with its latest MOST_ATTEMPTS attempts."""
    a, t = actions.c, action_attempts.c
    rows = conn.execute(
        select(actions).where(a.dispatch_id == dispatch_id, a.site_id.in_(site_ids)).order_by(a.id)
    ).all()
    tried: dict[int, list[Attempt]] = defaultdict(list)
    for chunk in chunks([row.id for row in rows]):
        for row in conn.execute(
            select(action_attempts).where(t.action_id.in_(chunk)).order_by(t.action_id, t.number)
        ):
            tried[row.action_id].append(
                Attempt(
                    row.number, row.worker, row.started_at, row.finished_at, row.outcome, row.error
                )
            )
    return [
        Action(
            row.site_id,
            row.kind,
            row.episode,
            row.state,
            row.note,
            row.idempotency_key,
            Part(tried[row.id][-MOST_ATTEMPTS:], len(tried[row.id])),
        )
        for row in rows
    ]


def programs(engine: Engine, chosen: int | None) -> Part[tuple[int, str]]:
    """Programs' ids and names, for choosing one: the first MOST_ROWS by id, `chosen` among them."""
    p = schema.programs.c
    first = [p.id != chosen] if chosen is not None else []  # false first: the chosen one
    with read_transaction(engine) as conn:
        found = _first(conn, select(p.id, p.name).order_by(*first, p.id))
    return Part(sorted((row["id"], row["name"]) for row in found.rows), found.total)
