"""The audit trail: the story of a dispatch, a site or a time span, in time order, from the
event log (first seen, each change, each action's claims, attempts and outcomes, with keys)."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Engine, and_, exists, func, or_, select

from etl.base.errors import ConfigError
from etl.base.logs import one_line, shorten
from etl.base.timeutil import TimeShift, parse_rfc3339, time_shift, utcnow, with_offset
from etl.read.reports import stream
from etl.store.db import read_transaction
from etl.store.events import describe_subject
from etl.store.schema import dispatch_sites, dispatches, events, programs, sites

__all__ = ["COLUMNS", "AuditQuery", "describe", "require_known", "trail"]

# `etl audit` alone: what happened lately
DEFAULT_WINDOW = timedelta(hours=24)

COLUMNS = ["id", "occurred_at", "kind", "dispatch_id", "site_id", "program_id", "details"]
MOST_VALUE_CHARS = 60  # of a detail's value on an audit line
# a time as the event log's details keep it (RFC 3339)
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class AuditQuery:
    dispatch_id: str | None = None
    site_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def with_default_window(self) -> "AuditQuery":
        """With no filter at all, the last DEFAULT_WINDOW."""
        if self.dispatch_id or self.site_id or self.since or self.until:
            return self
        return AuditQuery(since=utcnow() - DEFAULT_WINDOW)


def require_known(engine: Engine, query: AuditQuery) -> None:
    """Refuse a dispatch or site that the store never saw (a typo, another account's id), which
    would otherwise read as a story in which nothing happened. Known: a row of its table, or an
    event naming it (a rejected dispatch has its event and no row)."""
    asked: list[tuple[str, str, Column[str], Column[str]]] = []
    if query.dispatch_id is not None:
        asked.append(("dispatch", query.dispatch_id, dispatches.c.id, events.c.dispatch_id))
    if query.site_id is not None:
        asked.append(("site", query.site_id, sites.c.id, events.c.site_id))
    with read_transaction(engine) as conn:
        for what, wanted, row_id, event_id in asked:
            known = select(
                or_(exists().where(row_id == wanted), exists().where(event_id == wanted))
            )
            if not conn.execute(known).scalar():
                raise ConfigError(f"no {what} {wanted!r} in the store")


def trail(engine: Engine, query: AuditQuery) -> Iterator[dict[str, Any]]:
    """The matching events, oldest first, streamed; each with its COLUMNS and the `timezone` of
    its program (its dispatch's, for a dispatch's event), for showing its time there."""
    program_id = func.coalesce(events.c.program_id, dispatches.c.program_id)
    statement = (
        select(*(events.c[c] for c in COLUMNS), programs.c.timezone)
        .select_from(
            events.outerjoin(dispatches, dispatches.c.id == events.c.dispatch_id).outerjoin(
                programs, programs.c.id == program_id
            )
        )
        .order_by(events.c.id)
    )
    if query.dispatch_id is not None:
        statement = statement.where(events.c.dispatch_id == query.dispatch_id)
    if query.site_id is not None:
        # the site's own events, and the dispatch-wide ones of every dispatch it was part of
        its_dispatches = select(dispatch_sites.c.dispatch_id).where(
            dispatch_sites.c.site_id == query.site_id
        )
        statement = statement.where(
            or_(
                events.c.site_id == query.site_id,
                and_(events.c.site_id.is_(None), events.c.dispatch_id.in_(its_dispatches)),
            )
        )
    if query.since is not None:
        statement = statement.where(events.c.occurred_at >= query.since)
    if query.until is not None:
        statement = statement.where(events.c.occurred_at < query.until)
    yield from stream(engine, statement)


def describe(event: dict[str, Any], shift: TimeShift | None = None) -> str:
    """One line for a person: when (with its offset), what, of what, and the details that
    matter; the times among the details shifted as `occurred_at` was (--tz), a long value cut
    between words (`etl audit --jsonl` keeps them whole)."""
    subject = describe_subject(event["dispatch_id"], event["site_id"], event["program_id"])
    shift, zone = shift or time_shift("utc"), event.get("timezone")
    details = "  ".join(
        f"{k}={shorten(_compact(v, shift, zone), MOST_VALUE_CHARS)}"
        for k, v in event["details"].items()
    )
    when = _shown(event["occurred_at"])
    return one_line(f"{when}  {event['kind']:<24} {subject:<28} {details}".rstrip())


def _compact(value: Any, shift: TimeShift, zone: str | None) -> str:
    """A detail's value as the audit's line shows it: JSON's spelling (true, false, null), an
    old→new pair, and a time in the chosen zone."""
    if isinstance(value, dict) and set(value) == {"old", "new"}:
        return f"{_compact(value['old'], shift, zone)}→{_compact(value['new'], shift, zone)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v, shift, zone)}" for k, v in value.items()) + "}"
    if isinstance(value, list):  # as far as the line shows it: a dispatch names 5,000 sites
        shown: list[str] = []
        length = 0
        for item in value:
            if length > MOST_VALUE_CHARS + 1:  # joined, longer than the line's cut
                break
            shown.append(_compact(item, shift, zone))
            length += len(shown[-1]) + 1
        return ",".join(shown)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and TIME.fullmatch(value):
        try:
            return _shown(shift(parse_rfc3339(value), zone))
        except ValueError:
            return value
    return "null" if value is None else str(value)


def _shown(moment: datetime) -> str:
    return with_offset(moment.isoformat(sep=" ", timespec="seconds"))
