"""The metered response of each (dispatch, site), measured once its readings are stored.

Computed at every read, the measures cost some twenty lookups of readings a pair: a year of a
5,000-site fleet made `etl status` take 16 s. So the table measured_performance keeps each
pair's measures, which the view dispatch_performance reads. A pair that the view lists (its
dispatch authorized, not a test, with an end) is due to be measured when it has no measure
kept: at first (no readings yet, a coverage of 0), and whenever its measure is forgotten. A
telemetry fetch forgets the measures that the readings it stores may change (of every pair of
those sites whose window, or the day after its end in which a recovery is looked for, holds one
of them), and so does a sites fetch that changes a site's meters, for its recent dispatches;
then `measure_due` measures what is due, a chunk of sites a transaction: a crash between the two
loses nothing, and no transaction holds SQLite's write lock for long. A store upgraded from
before revision 0029 has its history measured by `etl db measure`.

The measures are those docs/database.md defines, which the view performance_from_readings also
computes from the readings stored now (tests hold the two equal). The view looks the readings
up a pair at a time: 33 s for a dispatch of 5,000 sites on PostgreSQL. Here one statement
measures a chunk of a dispatch's sites in one pass over their readings grouped by interval, and
only the measures reach Python (the 750,000 readings themselves took 7 s to read into Python):
4.5 s for the same dispatch.
"""

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    Subquery,
    and_,
    case,
    column,
    delete,
    func,
    select,
    tuple_,
    values,
)

from etl.base.vocabulary import ActionState
from etl.handlers import ActionKind
from etl.store.db import read_transaction, write_transaction
from etl.store.rows import IN_CHUNK, Row, chunks, insert_rows
from etl.store.schema import (
    BASELINE_BEFORE,
    TELEMETRY_INTERVAL,
    actions,
    dispatch_sites,
    dispatches,
    measured_performance,
    sites,
    telemetry,
)

__all__ = [
    "AFTER_END",
    "RECOVERY_WITHIN",
    "RELISTED_WITHIN",
    "forget_read",
    "forget_sites",
    "measure",
    "measure_due",
]

AFTER_END = timedelta(minutes=30)  # the window's readings after the end, for the coverage
RECOVERY_WITHIN = timedelta(hours=24)  # after the restore: how long a recovery is looked for
# a site listed anew: its dispatches that ended this recently are measured again (the default
# lookback of `etl fetch --telemetry`, whose passes measure them)
RELISTED_WITHIN = timedelta(days=7)
# how a meter's asset_type counts (migration 0017's roles); any other type is the site's load,
# unless the site has a POI, which holds it already
ROLES = {"generator": "generation", "battery": "storage", "poi": "load"}


@dataclass(frozen=True)
class _Pair:
    site_id: str
    start: datetime
    end: datetime
    commitment_kw: float | None
    curtailed_at: datetime | None
    restored_at: datetime | None


def measure_due(
    engine: Engine, ended_since: datetime | None = None, budget_seconds: float | None = None
) -> tuple[int, int]:
    """Measure the pairs due (of dispatches that end since then; None: all), newest first,
    a chunk a transaction, until none is due or the budget is spent: how many were measured,
    and how many are still due."""
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    measured = 0
    while deadline is None or time.monotonic() < deadline:
        with write_transaction(engine) as conn:
            due = conn.execute(_due(ended_since).limit(IN_CHUNK)).all()
            done = measure(conn, [(row.dispatch_id, row.site_id) for row in due])
        measured += done
        if not done:  # none due (a pair due is always measured: _due and _pairs agree)
            return measured, 0
    with read_transaction(engine) as conn:
        still = conn.execute(select(func.count()).select_from(_due(ended_since).subquery()))
        return measured, still.scalar_one()


def _due(ended_since: datetime | None) -> Select[Any]:
    d, ds, kept = dispatches.c, dispatch_sites.c, measured_performance.c
    query = (
        select(ds.dispatch_id, ds.site_id)
        .join(dispatches, d.id == ds.dispatch_id)
        .outerjoin(
            measured_performance,
            and_(kept.dispatch_id == ds.dispatch_id, kept.site_id == ds.site_id),
        )
        .where(kept.dispatch_id.is_(None), _measured_pair())
        .order_by(d.end_time.desc(), ds.dispatch_id, ds.site_id)
    )
    return query if ended_since is None else query.where(d.end_time >= ended_since)


def _measured_pair() -> ColumnElement[bool]:
    """A (dispatch, site) that dispatch_performance lists: its dispatch authorized, not a
    test, with an end, and listing the site still."""
    d, ds = dispatches.c, dispatch_sites.c
    return and_(
        ds.removed_at.is_(None),
        d.authorized.is_(True),
        d.test.is_(False),
        d.end_time.is_not(None),
    )


def forget_read(conn: Connection, written: Iterable[tuple[str, datetime]]) -> None:
    """Forget the measures that these readings, (site id, interval end), may change: those of
    every pair of a site among them whose window, from an hour before its start to a day and 30
    minutes after its end, holds one."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for site_id, at in written:
        first, last = spans.get(site_id, (at, at))
        spans[site_id] = (min(first, at), max(last, at))
    if not spans:
        return
    after_end = AFTER_END + RECOVERY_WITHIN
    first = min(span[0] for span in spans.values()) - after_end
    last = max(span[1] for span in spans.values()) + BASELINE_BEFORE
    d, ds = dispatches.c, dispatch_sites.c
    stale = []
    for chunk in chunks(sorted(spans)):
        for row in conn.execute(
            select(ds.dispatch_id, ds.site_id, d.start_time, d.end_time)
            .join(dispatches, d.id == ds.dispatch_id)
            .where(ds.site_id.in_(chunk), d.start_time < last, d.end_time >= first)
        ):
            site_first, site_last = spans[row.site_id]
            before, after = row.start_time - BASELINE_BEFORE, row.end_time + after_end
            if before < site_last and site_first <= after:
                stale.append((row.dispatch_id, row.site_id))
    _forget(conn, stale)


def forget_sites(conn: Connection, site_ids: list[str], ended_since: datetime) -> None:
    """Forget the measures of these sites' dispatches ended since then (their meters changed:
    their load is another sum)."""
    d, ds = dispatches.c, dispatch_sites.c
    stale = []
    for chunk in chunks(site_ids):
        stale += [
            (row.dispatch_id, row.site_id)
            for row in conn.execute(
                select(ds.dispatch_id, ds.site_id)
                .join(dispatches, d.id == ds.dispatch_id)
                .where(ds.site_id.in_(chunk), d.end_time >= ended_since)
            )
        ]
    _forget(conn, stale)


def _forget(conn: Connection, pairs: list[tuple[str, str]]) -> None:
    kept = measured_performance.c
    for chunk in chunks(pairs):
        conn.execute(
            delete(measured_performance).where(tuple_(kept.dispatch_id, kept.site_id).in_(chunk))
        )


def measure(conn: Connection, pairs: Iterable[tuple[str, str]]) -> int:
    """Measure each (dispatch, site) from the readings stored now, replacing what was kept; how
    many were measured. A pair that dispatch_performance does not list keeps nothing."""
    by_dispatch: dict[str, set[str]] = {}
    for dispatch_id, site_id in pairs:
        by_dispatch.setdefault(dispatch_id, set()).add(site_id)
    measured = 0
    for dispatch_id, site_ids in sorted(by_dispatch.items()):
        for chunk in chunks(sorted(site_ids)):
            _forget(conn, [(dispatch_id, site_id) for site_id in chunk])
            found = _pairs(conn, dispatch_id, chunk)
            if found:
                insert_rows(conn, measured_performance, _measured(conn, dispatch_id, found))
                measured += len(found)
    return measured


def _pairs(conn: Connection, dispatch_id: str, site_ids: list[str]) -> list[_Pair]:
    d, ds = dispatches.c, dispatch_sites.c
    # read apart and matched here: joined to the pairs, or as correlated subqueries, one of the
    # two databases planned them badly (8.6 s and 6.8 s for 5,000 sites, against 0.1 s)
    done: dict[ActionKind, dict[str, datetime]] = {
        kind: dict(conn.execute(select(*_first_success(kind, dispatch_id, site_ids).c)).all())
        for kind in (ActionKind.CURTAIL, ActionKind.RESTORE)
    }
    found = conn.execute(
        select(ds.site_id, d.start_time, d.end_time, ds.commitment_kw)
        .join(dispatches, d.id == ds.dispatch_id)
        .where(ds.dispatch_id == dispatch_id, ds.site_id.in_(site_ids), _measured_pair())
    )
    return [
        _Pair(
            *row,
            curtailed_at=done[ActionKind.CURTAIL].get(row.site_id),
            restored_at=done[ActionKind.RESTORE].get(row.site_id),
        )
        for row in found
    ]


def _first_success(kind: ActionKind, dispatch_id: str, site_ids: list[str]) -> Subquery:
    """When each of these sites' action of this kind for the dispatch first succeeded: the
    curtail and restore times of a pair's measure, and the restore its recovery follows."""
    a = actions.c
    return (
        select(a.site_id, func.min(a.finished_at).label("at"))
        .where(
            a.dispatch_id == dispatch_id,
            a.site_id.in_(site_ids),
            a.kind == kind,
            a.state == ActionState.SUCCEEDED,
        )
        .group_by(a.site_id)
        .subquery(f"first_{kind}")
    )


def _measured(conn: Connection, dispatch_id: str, found: list[_Pair]) -> list[Row]:
    """The measures of these pairs, all of one dispatch."""
    start, end = found[0].start, found[0].end
    restores = [p.restored_at for p in found if p.restored_at is not None]
    # the readings read: the window, and those of the day after each restore, which may precede
    # the window (a restore of an episode before the dispatch was moved later)
    after = min([start - BASELINE_BEFORE, *restores])
    until = max([end + AFTER_END, *(at + RECOVERY_WITHIN for at in restores)])
    site_ids = [p.site_id for p in found]
    roles = _roles(conn, site_ids)
    query = _measures_query(dispatch_id, site_ids, roles, start, end, (after, until))
    measured = {row.site_id: row for row in conn.execute(query)}
    rows = []
    for p in found:
        m = measured.get(p.site_id)
        baseline, during = (m.baseline_kw, m.mean_kw_during) if m else (None, None)
        delivered = None if baseline is None or during is None else baseline - during
        responded = m.responded_at if m else None
        recovered = m.recovered_at if m else None
        if recovered is not None and p.restored_at and recovered > p.restored_at + RECOVERY_WITHIN:
            recovered = None  # the first over the line came too late to be a recovery
        rows.append(
            {
                "dispatch_id": dispatch_id,
                "site_id": p.site_id,
                "baseline_kw": baseline,
                "mean_kw_during": during,
                "delivered_kw": delivered,
                "delivered_pct": (
                    100.0 * delivered / p.commitment_kw
                    if delivered is not None and p.commitment_kw is not None and p.commitment_kw > 0
                    else None
                ),
                "responded_at": responded,
                "response_seconds_from_start": _seconds(responded, p.start),
                "response_seconds_from_curtail": _seconds(responded, p.curtailed_at),
                "recovery_seconds_from_restore": _seconds(recovered, p.restored_at),
                "coverage": (m.present if m else 0) * TELEMETRY_INTERVAL / _window_seconds(p),
                "generation_kw_during": m.generation_kw_during if m else None,
                "storage_kw_during": m.storage_kw_during if m else None,
            }
        )
    return rows


@dataclass(frozen=True)
class _Roles:
    """How the readings of some sites count, where it is not as `load`: the role of each meter
    that GET /sites listed with another role, or more than once (once per listing: its readings
    count twice, as the view's join counts them), and the sites with a POI, whose meters not
    listed as one are behind it."""

    listed: list[tuple[str, str, str]]  # (site_id, meter_id, role)
    with_poi: list[str]


def _roles(conn: Connection, site_ids: list[str]) -> _Roles:
    listed, with_poi = [], []
    for site_id, meters in conn.execute(
        select(sites.c.id, sites.c.meters).where(sites.c.id.in_(site_ids))
    ):
        # as the views read the JSON: a meter is an object, its id and type strings
        meters = [m for m in meters if isinstance(m, dict)] if isinstance(meters, list) else []
        meters = [{k: v if isinstance(v, str) else None for k, v in m.items()} for m in meters]
        has_poi = any(m.get("asset_type") == "poi" for m in meters)
        if has_poi:
            with_poi.append(site_id)
        other = "behind_poi" if has_poi else "load"
        times = Counter(m.get("id") for m in meters)
        listed += [
            (site_id, m.get("id"), role)
            for m in meters
            if (role := ROLES.get(m.get("asset_type"), other)) != other or times[m.get("id")] > 1
        ]
    return _Roles(listed, with_poi)


def _measures_query(
    dispatch_id: str,
    site_ids: list[str],
    roles: _Roles,
    start: datetime,
    end: datetime,
    read: tuple[datetime, datetime],
) -> Select[Any]:
    """One row per site with readings in (read[0], read[1]]: its load's mean
    before and during the dispatch, the intervals of its window with load, its generation and
    storage during, the first interval end during the dispatch with its load at or under its
    line (the baseline less half the commitment), and the first after its restore back over
    (measure() drops one beyond RECOVERY_WITHIN). One pass over the intervals, each carrying
    its site's baseline: joins of the intervals with per-site figures were planned as nested
    loops, millions of comparisons for a chunk of sites."""
    i = _intervals(site_ids, roles, *read).c
    before = and_(
        i.role == "load", i.interval_end > start - BASELINE_BEFORE, i.interval_end <= start
    )
    baseline = func.sum(case((before, i.kw))).over(partition_by=i.site_id) / func.count(
        case((before, 1))
    ).over(partition_by=i.site_id)
    w = select(i.site_id, i.role, i.interval_end, i.kw, baseline.label("baseline_kw")).subquery()
    ds = dispatch_sites.c
    restores = _first_success(ActionKind.RESTORE, dispatch_id, site_ids)
    line = w.c.baseline_kw - ds.commitment_kw / 2
    load = w.c.role == "load"
    during = and_(w.c.interval_end > start, w.c.interval_end <= end)

    def mean(role: str) -> Any:  # during the dispatch
        inside = and_(w.c.role == role, during)
        return func.sum(case((inside, w.c.kw))) / func.count(case((inside, 1)))

    in_window = and_(
        w.c.interval_end > start - BASELINE_BEFORE, w.c.interval_end <= end + AFTER_END
    )
    answered = and_(load, during, w.c.kw <= line)
    recovered = and_(load, w.c.interval_end > restores.c.at, w.c.kw > line)
    return (
        select(
            w.c.site_id,
            func.max(w.c.baseline_kw).label("baseline_kw"),
            mean("load").label("mean_kw_during"),
            func.count(case((and_(load, in_window), 1))).label("present"),
            mean("generation").label("generation_kw_during"),
            mean("storage").label("storage_kw_during"),
            func.min(case((answered, w.c.interval_end))).label("responded_at"),
            func.min(case((recovered, w.c.interval_end))).label("recovered_at"),
        )
        .select_from(
            w.join(
                dispatch_sites, and_(ds.dispatch_id == dispatch_id, ds.site_id == w.c.site_id)
            ).outerjoin(restores, restores.c.site_id == w.c.site_id)
        )
        .group_by(w.c.site_id)
    )


def _intervals(site_ids: list[str], roles: _Roles, after: datetime, until: datetime) -> Any:
    """The kW of each (site, role, interval end) in (after, until]: its meters' readings summed."""
    t = telemetry.c
    role: Any = case((t.site_id.in_(roles.with_poi), "behind_poi"), else_="load")
    source: Any = telemetry
    if roles.listed:
        listed = values(
            column("site_id", String), column("meter_id", String), column("role", String),
            name="listed",
        ).data(roles.listed).cte("listed")  # fmt: skip
        on_listed = and_(listed.c.site_id == t.site_id, listed.c.meter_id == t.meter_id)
        source = telemetry.outerjoin(listed, on_listed)
        role = func.coalesce(listed.c.role, role)
    readings = (
        select(t.site_id, role.label("role"), t.interval_end, t.kw)
        .select_from(source)
        .where(
            t.site_id.in_(site_ids),
            t.interval_seconds == TELEMETRY_INTERVAL,
            t.interval_end > after,
            t.interval_end <= until,
        )
        .subquery("readings")
    )
    r = readings.c
    return (
        select(r.site_id, r.role, r.interval_end, func.sum(r.kw).label("kw"))
        .group_by(r.site_id, r.role, r.interval_end)
        .subquery("intervals")
    )


def _window_seconds(p: _Pair) -> int:
    return _epoch(p.end) - _epoch(p.start) + int((BASELINE_BEFORE + AFTER_END).total_seconds())


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    """Whole seconds between two times, each first rounded to the second as the view does."""
    if later is None or earlier is None:
        return None
    return float(_epoch(later) - _epoch(earlier))


def _epoch(moment: datetime) -> int:
    return math.floor(moment.timestamp() + 0.5)  # half up, as round() on a positive numeric
