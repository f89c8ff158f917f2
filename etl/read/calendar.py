"""Dispatches as an iCalendar feed (RFC 5545, written by the icalendar package, which only this
module imports): one event per dispatch, for the people who plan around them.

An event's UID is its dispatch's, at the API the store serves, so that it stays the same across
fetches and feeds; its SEQUENCE counts the changes etl recorded of the dispatch (the event log),
so that a calendar client moves the event when its dispatch moves and cancels it (STATUS
CANCELLED) when its dispatch is cancelled.
"""

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, func, select

from etl.base.logs import counted
from etl.base.timeutil import format_rfc3339, zone_or_utc
from etl.base.vocabulary import EventKind
from etl.read.reports import ReportFilter, dispatches_report, listed_sites
from etl.store import binding
from etl.store.db import read_transaction
from etl.store.rows import chunks
from etl.store.schema import events

__all__ = ["CHANGES", "REFRESH", "UNKNOWN_END_SHOWN", "ics"]

# how often a subscribed calendar should ask again (RFC 7986's REFRESH-INTERVAL, and the
# X-PUBLISHED-TTL that Outlook and Google read): dispatches come with an hour's notice or less
REFRESH = timedelta(minutes=15)
# a dispatch whose end is not known yet is shown this long, and says so: an event with no end
# is a point in time, which calendars draw as nothing or as a whole day
UNKNOWN_END_SHOWN = timedelta(hours=1)

# the events that change what a calendar shows of a dispatch: each raises its SEQUENCE
CHANGES = (
    EventKind.DISPATCH_CREATED,
    EventKind.DISPATCH_CHANGED,
    EventKind.DISPATCH_END_TIME_SET,
    EventKind.DISPATCH_END_TIME_MOVED,
    EventKind.DISPATCH_CANCELLED,
    EventKind.DISPATCH_VANISHED,
    EventKind.DISPATCH_SITE_ADDED,
    EventKind.DISPATCH_SITE_REMOVED,
    EventKind.DISPATCH_SITE_CHANGED,
)


def ics(engine: Engine, f: ReportFilter, now: datetime) -> bytes:
    """The dispatches that `etl report dispatches` would list with this filter, as a calendar."""
    from icalendar import Calendar, Event, vDuration

    with read_transaction(engine, one_snapshot=True) as conn:
        rows = conn.execute(dispatches_report(f)).mappings().all()
        ids = [row["dispatch_id"] for row in rows]
        revisions = _revisions(conn, ids)
        named = _sites(conn, ids)
        bound = binding.read(conn)
    host = (urlsplit(bound.api_origin).hostname if bound else None) or "unbound.invalid"
    calendar = Calendar()
    calendar.add("prodid", "-//etl//Voltus dispatches//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", "Voltus dispatches")
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", vDuration(REFRESH))
    for row in rows:
        calendar.add_component(_event(Event(), row, revisions, named, host, now))
    return calendar.to_ical()


def _event(
    event: Any,
    row: Any,
    revisions: dict[str, int],
    named: dict[str, list[str]],
    host: str,
    now: datetime,
) -> Any:
    dispatch_id, start, end = row["dispatch_id"], row["start_time"], row["end_time"]
    zone = zone_or_utc(row["timezone"])
    test = "TEST " if row["test"] else ""
    event.add("uid", f"{dispatch_id}@{host}")
    event.add("sequence", max(0, revisions.get(dispatch_id, 1) - 1))
    event.add("dtstamp", now)
    event.add("last-modified", row["updated_at"])
    event.add("dtstart", start)
    event.add("dtend", end or start + UNKNOWN_END_SHOWN)
    event.add("status", "CONFIRMED" if row["authorized"] else "CANCELLED")
    sites_text = counted(row["sites"], "site")
    open_ended = "" if end else " (end unknown)"
    summary = f"{test}Voltus dispatch: {row['program_name']}, {sites_text}{open_ended}"
    event.add("summary", summary)
    local = start.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    shown_for = f"{UNKNOWN_END_SHOWN // timedelta(minutes=1)} minutes"
    lines = [
        f"Dispatch {dispatch_id} of {row['program_name']} ({row['market'] or 'no market'})",
        f"Starts {local} ({format_rfc3339(start)})",
        "Ends "
        + (
            end.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
            if end
            else f"unknown yet (shown as {shown_for}; it moves once Voltus sets it)"
        ),
        f"Committed: {row['committed_kw'] or 0:g} kW",
        *named.get(dispatch_id, []),
    ]
    event.add("description", "\n".join(lines))
    return event


def _revisions(conn: Connection, dispatch_ids: list[str]) -> dict[str, int]:
    """How many changes etl recorded of each dispatch (at least its creation)."""
    e = events.c
    found: dict[str, int] = {}
    for chunk in chunks(dispatch_ids):
        found |= dict(
            conn.execute(
                select(e.dispatch_id, func.count())
                .where(e.dispatch_id.in_(chunk), e.kind.in_(CHANGES))
                .group_by(e.dispatch_id)
            ).all()
        )
    return found


def _sites(conn: Connection, dispatch_ids: list[str]) -> dict[str, list[str]]:
    """Each dispatch's sites, a line each: name, id and commitment."""
    return {
        dispatch_id: [
            f"- {site.name} ({site.site_id}): "
            + ("no commitment" if site.commitment_kw is None else f"{site.commitment_kw:g} kW")
            for site in listed
        ]
        for dispatch_id, listed in listed_sites(conn, dispatch_ids).items()
    }
