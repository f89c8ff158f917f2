"""The audit trail: the story of a dispatch, a site or a time span, in time order, from the
event log (first seen, each change, each action's claims, attempts and outcomes, with keys)."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from etl.base.logs import one_line
from etl.base.timeutil import utcnow, with_offset
from etl.store.db import read_transaction
from etl.store.events import describe_subject
from etl.store.schema import dispatch_sites, dispatches, events, programs

__all__ = ["COLUMNS", "AuditQuery", "describe", "trail"]

# `etl audit` alone: what happened lately
DEFAULT_WINDOW = timedelta(hours=24)

COLUMNS = ["id", "occurred_at", "kind", "dispatch_id", "site_id", "program_id", "details"]


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
    with read_transaction(engine) as conn:
        for row in conn.execution_options(yield_per=500).execute(statement):
            yield row._asdict()


def describe(event: dict[str, Any]) -> str:
    """One line for a person: when (with its offset), what, of what, and the details that
    matter."""
    subject = describe_subject(event["dispatch_id"], event["site_id"], event["program_id"])
    details = "  ".join(f"{k}={_compact(v)}" for k, v in event["details"].items())
    when = with_offset(event["occurred_at"].isoformat(sep=" ", timespec="seconds"))
    return one_line(f"{when}  {event['kind']:<24} {subject:<28} {details}".rstrip())


def _compact(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"old", "new"}:
        return f"{_compact(value['old'])}→{_compact(value['new'])}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return ",".join(_compact(v) for v in value)
    return "null" if value is None else str(value)
