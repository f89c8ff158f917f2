"""Reports over the SQL views (created by migration 0003, documented in docs/database.md).

Each report is a query; `stream` runs it and yields rows as the database returns them, so a long
report is never held in memory whole.
"""

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    case,
    func,
    select,
)

from etl.base.errors import ConfigError
from etl.base.timeutil import utcnow
from etl.store import schema
from etl.store.db import read_transaction
from etl.store.rows import chunks
from etl.store.schema import UTCDateTime

__all__ = [
    "APART",
    "ListedSite",
    "ReportFilter",
    "curtailments_report",
    "dispatch_performance",
    "dispatches_report",
    "listed_sites",
    "meter_readings",
    "performance_report",
    "program_zones",
    "programs_report",
    "site_meters",
    "sites_report",
    "standing",
    "stream",
]

STREAMED_BATCH = 2000  # rows a round trip: a month's performance is 300,000 of them

# The views' columns, typed so that times come back aware and booleans as bools on both
# databases. Not part of the models' metadata: migrations create views, autogenerate ignores them.
VIEWS = MetaData()
curtailment_log = Table(
    "curtailment_log",
    VIEWS,
    Column("action_id", Integer),
    Column("action", String),
    Column("episode", Integer),
    Column("state", String),
    Column("idempotency_key", String),
    Column("dispatch_id", String),
    Column("program_id", Integer),
    Column("program_name", String),
    Column("test", Boolean),
    Column("dispatch_start_time", UTCDateTime),
    Column("dispatch_end_time", UTCDateTime),
    Column("site_id", String),
    Column("site_name", String),
    Column("customer_location_id", String),
    Column("commitment_kw", Float),
    Column("attempts", Integer),
    Column("planned_at", UTCDateTime),
    Column("first_attempt_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("last_worker", String),
    Column("note", String),
)
dispatch_summary = Table(
    "dispatch_summary",
    VIEWS,
    Column("dispatch_id", String),
    Column("program_id", Integer),
    Column("program_name", String),
    Column("program_type", String),
    Column("market", String),
    Column("timezone", String),
    Column("authorized", Boolean),
    Column("test", Boolean),
    Column("start_time", UTCDateTime),
    Column("end_time", UTCDateTime),
    Column("start_date_local", String),
    Column("first_seen_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    Column("sites", Integer),
    Column("committed_kw", Float),
    Column("curtails_succeeded", Integer),
    Column("curtails_failed", Integer),
    Column("curtails_missed", Integer),
    Column("curtails_skipped", Integer),
    Column("restores_succeeded", Integer),
    Column("restores_superseded", Integer),
    Column("restores_failed", Integer),
    Column("restores_waiting", Integer),
    Column("open_actions", Integer),
    Column("outcome", String),
)


# Migration 0017's views: each meter GET /sites listed, and each reading with its meter's role
# (`load` counts in a site's load)
site_meters = Table(
    "site_meters",
    VIEWS,
    Column("site_id", String),
    Column("meter_id", String),
    Column("name", String),
    Column("asset_type", String),
)
meter_readings = Table(
    "meter_readings",
    VIEWS,
    Column("site_id", String),
    Column("meter_id", String),
    Column("asset_type", String),
    Column("role", String),
    Column("interval_end", UTCDateTime),
    Column("interval_seconds", Integer),
    Column("kw", Float),
)


# Migrations 0007 and 0017's view: the metered response of each (dispatch, site), as
# docs/database.md has it
dispatch_performance = Table(
    "dispatch_performance",
    VIEWS,
    Column("dispatch_id", String),
    Column("site_id", String),
    Column("program_id", Integer),
    Column("start_time", UTCDateTime),
    Column("end_time", UTCDateTime),
    Column("commitment_kw", Float),
    Column("baseline_kw", Float),
    Column("mean_kw_during", Float),
    Column("delivered_kw", Float),
    Column("delivered_pct", Float),
    Column("responded_at", UTCDateTime),
    Column("response_seconds_from_start", Float),
    Column("response_seconds_from_curtail", Float),
    Column("recovery_seconds_from_restore", Float),
    Column("coverage", Float),
    Column("generation_kw_during", Float),
    Column("storage_kw_during", Float),
)


def _site_commitments(name: str, period: str) -> Table:
    return Table(
        name,
        VIEWS,
        Column("site_id", String),
        Column("site_name", String),
        Column("program_id", Integer),
        Column("timezone", String),
        Column(period, String),
        Column("dispatches", Integer),
        Column("committed_kw", Float),
        Column("max_committed_kw", Float),
    )


site_commitments = {
    "day": _site_commitments("site_commitments_daily", "day"),
    "month": _site_commitments("site_commitments_monthly", "month"),
}


@dataclass(frozen=True)
class ReportFilter:
    since: datetime | None = None  # dispatches starting at or after
    until: datetime | None = None  # dispatches starting before
    program_id: int | None = None
    site_id: str | None = None
    test: bool | None = None  # None: test dispatches and others alike


def _dispatch_filters(
    query: Select[Any], f: ReportFilter, start: Column[Any], dispatch_id: Column[Any], view: Table
) -> Select[Any]:
    if f.since is not None:
        query = query.where(start >= f.since)
    if f.until is not None:
        query = query.where(start < f.until)
    if f.program_id is not None:
        query = query.where(view.c.program_id == f.program_id)
    if f.test is not None:
        query = query.where(view.c.test == f.test)
    if f.site_id is not None:
        has_site = select(schema.dispatch_sites.c.dispatch_id).where(
            schema.dispatch_sites.c.site_id == f.site_id
        )
        query = query.where(dispatch_id.in_(has_site))
    return query


def dispatches_report(f: ReportFilter) -> Select[Any]:
    v = dispatch_summary
    query = select(v).order_by(v.c.start_time, v.c.dispatch_id)
    return _dispatch_filters(query, f, v.c.start_time, v.c.dispatch_id, v)


def curtailments_report(f: ReportFilter) -> Select[Any]:
    v = curtailment_log
    query = select(v).order_by(
        v.c.dispatch_start_time, v.c.dispatch_id, v.c.site_id, v.c.episode, v.c.action
    )
    query = _dispatch_filters(query, f, v.c.dispatch_start_time, v.c.dispatch_id, v)
    return query if f.site_id is None else query.where(v.c.site_id == f.site_id)


def performance_report(f: ReportFilter) -> Select[Any]:
    """Each (dispatch, site) of the dispatches that have ended, with telemetry measures:
    delivered kW against a prior-hour baseline, and how fast the load answered. Test and
    cancelled dispatches have no row."""
    v = dispatch_performance
    query = (
        select(v)
        .where(v.c.end_time <= utcnow())
        .order_by(v.c.start_time, v.c.dispatch_id, v.c.site_id)
    )
    if f.test:
        raise ConfigError("performance is measured for non-test dispatches only: drop --test")
    f = replace(f, test=None)  # every row is of a non-test dispatch
    query = _dispatch_filters(query, f, v.c.start_time, v.c.dispatch_id, v)
    return query if f.site_id is None else query.where(v.c.site_id == f.site_id)


# the dispatches counted apart, in no total of kW: cancelled before any curtail, test ones, and
# those still to start; the others are `counted`
APART = ("cancelled", "test", "upcoming")


def standing(now: datetime) -> ColumnElement[str]:
    """How a row of dispatch_summary counts in the programs report and the console's history:
    one of APART (first that applies, by its outcome then its start), or `counted`."""
    v = dispatch_summary.c
    return case(
        (v.outcome == "cancelled", "cancelled"),
        (v.outcome == "test", "test"),
        (v.start_time > now, "upcoming"),
        else_="counted",
    )


def programs_report(f: ReportFilter) -> Select[Any]:
    """One row per program: its dispatches, of which how many are cancelled, test and upcoming
    (APART), the kW committed to the others, and the curtails."""
    v = dispatch_summary
    counts_as = standing(utcnow())
    query = (
        select(
            v.c.program_id,
            v.c.program_name,
            v.c.program_type,
            v.c.market,
            v.c.timezone,
            func.count().label("dispatches"),
            *(func.sum(case((counts_as == name, 1), else_=0)).label(name) for name in APART),
            func.min(v.c.start_time).label("first_start"),
            func.max(v.c.start_time).label("last_start"),
            func.sum(case((counts_as == "counted", v.c.committed_kw), else_=0.0)).label(
                "committed_kw"
            ),
            func.sum(v.c.curtails_succeeded).label("curtails_succeeded"),
            func.sum(v.c.curtails_failed).label("curtails_failed"),
            func.sum(v.c.curtails_missed).label("curtails_missed"),
        )
        .group_by(v.c.program_id, v.c.program_name, v.c.program_type, v.c.market, v.c.timezone)
        .order_by(v.c.program_id)
    )
    return _dispatch_filters(query, f, v.c.start_time, v.c.dispatch_id, v)


def sites_report(f: ReportFilter, period: str = "day") -> Select[Any]:
    """Committed kW per site per day or month, in each program's time zone; authorized, non-test
    dispatches only. The time range applies to the local day."""
    if f.test:
        raise ConfigError("site commitments count only non-test dispatches: drop --test")
    v = site_commitments[period]
    width = len("YYYY-MM-DD") if period == "day" else len("YYYY-MM")
    query = select(v).order_by(v.c[period], v.c.site_id, v.c.program_id)
    if f.since is not None:  # the periods that end after `since`
        query = query.where(v.c[period] >= f.since.date().isoformat()[:width])
    if f.until is not None:  # ... and begin before `until`
        last = f.until - timedelta(microseconds=1)
        query = query.where(v.c[period] <= last.date().isoformat()[:width])
    if f.program_id is not None:
        query = query.where(v.c.program_id == f.program_id)
    if f.site_id is not None:
        query = query.where(v.c.site_id == f.site_id)
    return query


@dataclass(frozen=True)
class ListedSite:
    site_id: str
    name: str
    commitment_kw: float | None


def listed_sites(conn: Connection, dispatch_ids: list[str]) -> dict[str, list[ListedSite]]:
    """Each dispatch's sites as it lists them now (by name), with their commitments."""
    ds, s = schema.dispatch_sites.c, schema.sites.c
    found: dict[str, list[ListedSite]] = {}
    for chunk in chunks(dispatch_ids):
        for row in conn.execute(
            select(ds.dispatch_id, ds.site_id, s.name, ds.commitment_kw)
            .join(schema.sites, s.id == ds.site_id)
            .where(ds.dispatch_id.in_(chunk), ds.removed_at.is_(None))
            .order_by(ds.dispatch_id, s.name, ds.site_id)
        ):
            site = ListedSite(row.site_id, row.name, row.commitment_kw)
            found.setdefault(row.dispatch_id, []).append(site)
    return found


def program_zones(engine: Engine) -> dict[int, str]:
    """Each program's time zone name, for rows that name only their program."""
    with read_transaction(engine) as conn:
        return dict(conn.execute(select(schema.programs.c.id, schema.programs.c.timezone)).all())


def stream(engine: Engine, query: Select[Any]) -> Iterator[dict[str, Any]]:
    """The query's rows as the database hands them over, a batch at a time."""
    with read_transaction(engine) as conn:
        result = conn.execution_options(yield_per=STREAMED_BATCH).execute(query)
        keys = tuple(result.keys())
        for row in result:  # zipped: Row._asdict costs three times as much, 300,000 rows a month
            yield dict(zip(keys, row, strict=True))
