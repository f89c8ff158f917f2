"""Notifications: people told, in the channel they already watch, of what the event log records
that needs them: a dispatch created (a test one only with ETL_NOTIFY_TEST), moved, cancelled or
vanished; an action failing (at its first failed attempt, once) and cleared (when one told failing
succeeds), one that failed for good or was missed; and of what `etl status` finds: a site that
under-delivered, the status turning CRITICAL and back to OK (as etl.read.status judges it, by
the limits the command gives). ETL_NOTIFY_URLS names the channels as Apprise URLs (Slack,
Teams, e-mail, ntfy...); Apprise is imported only when they are set. Each is sent with the
Apprise type of its severity (SEVERITY), which the channels show as colour or icon.

Each notification is planned once, in the store: the notifier reads the event log past its
cursor (`notifier_state`) and writes a notification per event that needs one (`notifications`,
unique per event) with the cursor, in one transaction, so that a restart never repeats one and a
crash never loses one. A notice of the status has a subject instead (unique: `under_delivered:
<dispatch>:<site>`), and the last verdict told is kept with the cursor; so has a notice of an
action failing or cleared (`action_failing:<key>`, `action_cleared:<key>`: one per action, however
many attempts fail). The action notices of one turn are told one message per dispatch, kind
and action (`_grouped`): 200 sites failing in an outage are one message, ten of them named; each
action keeps its own row as the record of what it was told (so once-only stays per action), the
first's carrying the message and the others marked sent with it. Each is then delivered to
each service (each URL of ETL_NOTIFY_URLS, known in the store by a hash of its URL keyed with the
store's own secret, as the URL holds the service's): a service's taking it is written as it
happens, so a crash between the two sends it again to that service (at least once), and a retry
goes only to the services that have not taken it. A service that does not take one never blocks
or fails a run, nor holds back the others: the notification waits, tried again 30 s later, then
1, 2, 4... minutes up to an hour, and `etl status` says so; a service that did not take one is not
tried again in that turn, so a service down costs one timeout a turn, not one per notification,
and what it was not offered stays due, spending no attempt. What every service listed now has
not taken GIVE_UP after it was planned is given up: an error line, and `etl status` warns.

The list may change: a service added later is sent only what still waits (nothing when every
service works), one removed no longer holds anything back, and one moved in the list is the same.
"""

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, select, update

from etl.base.config import ProcessorSettings
from etl.base.logs import counted, log, one_line, percent_of, shorten
from etl.base.redact import redact_text
from etl.base.timeutil import parse_rfc3339, zone_or_utc
from etl.base.vocabulary import EventKind, Holding, NoticeKind
from etl.handlers import ActionKind
from etl.store.db import dialect_insert, read_transaction, write_transaction
from etl.store.identity import key_namespace
from etl.store.schema import (
    NOTIFICATION_WAITING,
    actions,
    dispatch_sites,
    dispatches,
    events,
    notification_deliveries,
    notifications,
    notifier_state,
    programs,
    sites,
)

if TYPE_CHECKING:  # the minutely job imports the status only to tell people of it
    from etl.read.status import Status

__all__ = [
    "FIRST_RETRY",
    "GIVE_UP",
    "NotifySummary",
    "deliver",
    "plan",
    "plan_health",
    "run",
]

EVENTS_PER_TURN = 5000  # of the log, read past the cursor at a turn
DELIVERIES_PER_TURN = 50
FIRST_RETRY, LONGEST_WAIT = timedelta(seconds=30), timedelta(hours=1)
# what every service has not taken by then is given up: past a dispatch's usual window, so its
# news is stale, yet long enough to ride out a service's outage of a few hours
GIVE_UP = timedelta(hours=6)
NEWS = timedelta(hours=1)  # an event older than this when first read is not told
HOLD = timedelta(minutes=2)  # a notification being sent is left to its notifier that long
NOTIFY_LOCK = "etl.notify"  # held while planning or taking a notification: notifiers take turns
TIME = "%a %d %b %H:%M %Z"  # in the program's time zone: `Sat 06 Dec 14:00 CST`
# a handler's error as told: enough to say what went wrong, short enough for a phone's screen
ERROR_CHARS = 300
# of a dispatch's sites, those named; the others are counted (a 200-site list is unreadable)
MOST_SITES_NAMED = 10
Listed = list[tuple[str, str, float | None]]  # a dispatch's sites: (id, `Bakery (12 kW)`, kW)
# where one URL of ETL_NOTIFY_URLS ends, as Apprise splits them: at commas, semicolons or spaces
# that lead into the next scheme (a comma inside a URL, `mailto://...?to=a@x,b@y`, stays)
NEXT_URL, DELIMITERS = re.compile(r"[\s,;]+(?=[a-z0-9]+://)", re.IGNORECASE), " \t\r\n,;"

# the events that need people, and what each tells them
NOTICES = {
    EventKind.DISPATCH_CREATED: NoticeKind.DISPATCH_CREATED,
    EventKind.DISPATCH_END_TIME_SET: NoticeKind.DISPATCH_MOVED,
    EventKind.DISPATCH_END_TIME_MOVED: NoticeKind.DISPATCH_MOVED,
    EventKind.DISPATCH_CHANGED: NoticeKind.DISPATCH_MOVED,  # when its start time changed
    EventKind.DISPATCH_CANCELLED: NoticeKind.DISPATCH_CANCELLED,
    EventKind.DISPATCH_VANISHED: NoticeKind.DISPATCH_VANISHED,
    EventKind.ACTION_RETRYING: NoticeKind.ACTION_FAILING,  # only the action's first: _action
    EventKind.ACTION_SUCCEEDED: NoticeKind.ACTION_CLEARED,  # only of one told failing
    EventKind.ACTION_FAILED: NoticeKind.ACTION_FAILED,
    EventKind.ACTION_MISSED: NoticeKind.ACTION_MISSED,
}
ACTION_NOTICES = (
    NoticeKind.ACTION_FAILING,
    NoticeKind.ACTION_CLEARED,
    NoticeKind.ACTION_FAILED,
    NoticeKind.ACTION_MISSED,
)
# how a message of several actions of one kind says what became of them
TOLD_OF_SEVERAL = {
    NoticeKind.ACTION_FAILING: "are failing",
    NoticeKind.ACTION_CLEARED: "succeeded",
    NoticeKind.ACTION_FAILED: "failed",
    NoticeKind.ACTION_MISSED: "were missed",
}

# Apprise's notification type of each kind: failure when a site is failing (or etl as a whole),
# warning for what needs a look but costs no site now, info for news, success when it clears
SEVERITY = {
    NoticeKind.DISPATCH_CREATED: "info",
    NoticeKind.DISPATCH_MOVED: "info",
    NoticeKind.DISPATCH_CANCELLED: "info",
    NoticeKind.DISPATCH_VANISHED: "warning",
    NoticeKind.ACTION_FAILING: "failure",
    NoticeKind.ACTION_CLEARED: "success",
    NoticeKind.ACTION_FAILED: "failure",
    NoticeKind.ACTION_MISSED: "warning",
    NoticeKind.UNDER_DELIVERED: "warning",
    NoticeKind.STATUS_CRITICAL: "failure",
    NoticeKind.STATUS_OK: "success",
}


@dataclass
class NotifySummary:
    planned: int = 0
    sent: int = 0  # deliveries a service took
    failed: int = 0  # deliveries a service did not take: tried again later
    waiting: int = 0


@dataclass(frozen=True)
class Service:
    """One URL of ETL_NOTIFY_URLS."""

    # what the store keeps of it: the first 16 hex digits of an HMAC-SHA256 of its URL keyed with
    # the store's key namespace, so that the URL's secrets cannot be guessed from the tables
    key: str
    name: str  # `#2 (json)`: its place in ETL_NOTIFY_URLS and its scheme, for people
    channel: Any  # an Apprise of that URL alone; None when Apprise does not know the URL


def run(
    engine: Engine, settings: ProcessorSettings, now: datetime, health: "Status | None" = None
) -> NotifySummary:
    """A turn: plan what the log (and the status, when given) asks for, then deliver what is
    due."""
    planned = plan(engine, settings, now)
    if health is not None:
        planned += plan_health(engine, health, now)
    summary = NotifySummary(planned=planned)
    if settings.notify_urls:
        deliver(engine, settings.notify_urls, now, summary)
    with read_transaction(engine) as conn:
        summary.waiting = conn.execute(
            select(func.count()).where(NOTIFICATION_WAITING)
        ).scalar_one()
    return summary


def plan(engine: Engine, settings: ProcessorSettings, now: datetime) -> int:
    """Notifications for the events past the cursor, and the cursor moved past them: one
    transaction. The action notices of the turn are grouped (`_grouped`). How many messages
    were planned."""
    with write_transaction(engine, NOTIFY_LOCK) as conn:  # two notifiers plan in turn
        cursor = conn.execute(select(notifier_state.c.last_event_id)).scalar_one()
        read = conn.execute(
            select(events.c.id, events.c.occurred_at, events.c.kind, events.c.dispatch_id,
                   events.c.site_id, events.c.details)
            .where(events.c.id > cursor)
            .order_by(events.c.id)
            .limit(EVENTS_PER_TURN)
        ).all()  # fmt: skip
        # the subjects planned in this turn: the next retry of an action, read in this turn,
        # sees it told failing already (the rows are written at the turn's end)
        told: set[str] = set()
        # the notices in the log's order; an action's stands in its group's place, the first's
        planned: list[dict[str, Any] | tuple[str, str, str]] = []
        groups: dict[tuple[str, str, str], list[tuple[Any, dict[str, Any]]]] = {}
        for event in read:
            if event.occurred_at < now - NEWS:
                continue  # notifications were off then, or etl was: old news now
            notice = _message(conn, event, settings, now, told)
            if notice is None:
                continue
            if notice["subject"] is not None:
                told.add(notice["subject"])
            if notice["kind"] not in ACTION_NOTICES:
                planned.append(notice)
                continue
            action = str((event.details or {}).get("action", "action"))
            group = (notice["dispatch_id"], notice["kind"], action)
            if group not in groups:
                groups[group] = []
                planned.append(group)
            groups[group].append((event, notice))
        rows: list[dict[str, Any]] = []
        for item in planned:
            rows += _grouped(conn, groups[item], now) if isinstance(item, tuple) else [item]
        if rows:
            conn.execute(notifications.insert(), rows)
        if read:
            conn.execute(update(notifier_state).values(last_event_id=read[-1].id))
    return sum(row["sent_at"] is None for row in rows)


def plan_health(engine: Engine, health: "Status", now: datetime) -> int:
    """Notifications for what the status found that was not told yet: each site that
    under-delivered on a dispatch, once; the verdict turning CRITICAL, and turning OK after a
    CRITICAL told (WARNING in between changes nothing). How many were planned."""
    planned: list[dict[str, Any]] = []
    with write_transaction(engine, NOTIFY_LOCK) as conn:
        subjects = {f"under_delivered:{d}:{s}": (d, s, pct) for d, s, pct in health.under_delivered}
        told = set(
            conn.execute(
                select(notifications.c.subject).where(notifications.c.subject.in_(subjects))
            ).scalars()
        )
        for subject, (dispatch_id, site_id, pct) in subjects.items():
            if subject not in told:
                title, body = _under_delivered(conn, dispatch_id, site_id, pct)
                kind = NoticeKind.UNDER_DELIVERED
                planned.append(_notice(now, kind, title, body, dispatch_id, subject=subject))
        last = conn.execute(select(notifier_state.c.health_told)).scalar_one()
        verdict = health.code.name
        if verdict == "CRITICAL" and last != "CRITICAL":
            body = "\n".join(health.problems) or "see etl status"
            # the first CRITICAL problem (a WARNING may come before it), its level said once
            first = next((p for p in health.problems if p.startswith("CRITICAL: ")), None)
            title = "etl status is " + (first or "CRITICAL: see etl status")
            kind = NoticeKind.STATUS_CRITICAL
            title = shorten(one_line(title), 300)
            planned.append(_notice(now, kind, title, body, None, subject=f"status:{now}"))
        elif verdict == "OK" and last == "CRITICAL":
            title = "etl status is OK again"
            body = "Every check passes again (etl status)."
            kind = NoticeKind.STATUS_OK
            planned.append(_notice(now, kind, title, body, None, subject=f"status:{now}"))
        if verdict in ("OK", "CRITICAL") and verdict != last:
            conn.execute(update(notifier_state).values(health_told=verdict))
        if planned:
            conn.execute(notifications.insert(), planned)
    return len(planned)


def _notice(
    now: datetime,
    kind: NoticeKind,
    title: str,
    body: str,
    dispatch_id: str | None,
    event_id: int | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """A notification's row: of an event, or of a subject."""
    return {
        "event_id": event_id,
        "subject": subject,
        "kind": kind,
        "dispatch_id": dispatch_id,
        "title": title,
        "body": body,
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
        "sent_at": None,
    }


def _under_delivered(
    conn: Connection, dispatch_id: str, site_id: str, pct: float
) -> tuple[str, str]:
    facts = _dispatch(conn, dispatch_id)
    program = facts["program"] if facts else "its program"
    title = (
        f"{_site_name(conn, site_id)} delivered {percent_of(pct)} of its commitment for dispatch "
        f"{dispatch_id} ({program})"
    )
    window = _window(facts) if facts else "its window"
    body = f"Measured over {window}.\n(etl report performance --site {site_id})"
    return shorten(one_line(title), 300), body


def deliver(engine: Engine, urls: str, now: datetime, summary: NotifySummary) -> None:
    """Send what is due, the least tried first, to each service that has not taken it, but for a
    service that did not take one this turn; give up what is due GIVE_UP after it was planned."""
    with read_transaction(engine) as conn:
        namespace = key_namespace(conn)
        # the least tried first: one that a service refuses for its content must not go first
        # at every turn, its failure making that service skip all the others
        due = conn.execute(
            select(notifications.c.id, notifications.c.kind, notifications.c.title,
                   notifications.c.body, notifications.c.created_at, notifications.c.last_error)
            .where(NOTIFICATION_WAITING, notifications.c.next_attempt_at <= now)
            .order_by(notifications.c.attempts, notifications.c.id)
            .limit(DELIVERIES_PER_TURN)
        ).all()  # fmt: skip
    services = _services(urls, namespace)
    if not services:
        # nothing would be left to send each one to: it would pass for sent
        log.warning("notifications: ETL_NOTIFY_URLS holds no URL; none is sent")
        return
    down: dict[str, str] = {}  # the services that did not take one this turn, with their error
    for notice in due:
        if not _hold(engine, notice.id, now):
            continue  # another notifier (etl serve beside a cron job) is sending it
        with read_transaction(engine) as conn:
            taken = set(
                conn.execute(
                    select(notification_deliveries.c.service).where(
                        notification_deliveries.c.notification_id == notice.id
                    )
                ).scalars()
            )
        left = [service for service in services if service.key not in taken]
        if left and notice.created_at <= now - GIVE_UP:
            _give_up(engine, notice, now)
            continue
        tried = [service for service in left if service.key not in down]
        errors = []
        for service in tried:
            error = _send(service, notice, urls)
            if error is None:
                _taken(engine, notice.id, service, now)
                summary.sent += 1
            else:
                summary.failed += 1
                down[service.key] = error
                errors.append(error)
                log.warning(
                    "notifications: %r not taken, tried again later: %s", notice.title, error
                )
        row = update(notifications).where(notifications.c.id == notice.id)
        with write_transaction(engine) as conn:
            if errors:
                _retry_later(conn, notice.id, now, "; ".join(errors))
            elif len(tried) < len(left):
                # not offered to a service down this turn: due again (the hold released), no
                # attempt spent, so that it is not given up there without having been offered
                conn.execute(row.values(next_attempt_at=now))
            else:
                conn.execute(row.values(sent_at=now, last_error=None))


def _services(urls: str, namespace: uuid.UUID) -> list[Service]:
    """A service for each URL of ETL_NOTIFY_URLS, named by its first place if listed twice, and
    keyed with the store's key namespace."""
    import warnings

    with warnings.catch_warnings():
        # Apprise loads its plug-ins as the URLs are added, one of them imghdr, deprecated
        # since Python 3.11: the warning is Apprise's to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        services: dict[str, Service] = {}
        for place, url in enumerate(_urls(urls), 1):
            key = hmac.new(namespace.bytes, url.encode(), hashlib.sha256).hexdigest()[:16]
            scheme = f" ({url.split('://')[0]})" if "://" in url else ""
            channel = apprise.Apprise()
            known = channel.add(url)
            if not known:
                log.warning("notifications: ETL_NOTIFY_URLS #%s is not a URL Apprise knows", place)
            services.setdefault(key, Service(key, f"#{place}{scheme}", channel if known else None))
    return list(services.values())


def _urls(urls: str) -> list[str]:
    return [url for url in NEXT_URL.split(urls.strip(DELIMITERS)) if url]


def _send(service: Service, notice: Any, urls: str) -> str | None:
    """Whether the service took the notification: None, or what it said (its secrets masked)."""
    import logging

    import apprise  # loaded already, by _services

    if service.channel is None:
        return f"{service.name}: not a URL Apprise knows"
    with apprise.LogCapture(level=logging.WARNING) as said:
        severity = SEVERITY[NoticeKind(notice.kind)]
        if service.channel.notify(title=notice.title, body=notice.body, notify_type=severity):
            return None
    return _error_text(said.getvalue(), urls, service)


def _hold(engine: Engine, notice_id: int, now: datetime) -> bool:
    """Take the notification for this notifier while it sends it, if it is still due: a
    notifier that dies holding it leaves it to the next one after HOLD."""
    n = notifications.c
    with write_transaction(engine, NOTIFY_LOCK) as conn:
        held = conn.execute(
            update(notifications)
            .where(n.id == notice_id, NOTIFICATION_WAITING, n.next_attempt_at <= now)
            .values(next_attempt_at=now + HOLD)
        )
    return held.rowcount == 1


def _taken(engine: Engine, notice_id: int, service: Service, now: datetime) -> None:
    """Written at once, so that no later failure sends it to this service again."""
    with write_transaction(engine) as conn:
        # another notifier, whose hold on the notice ran out, may have recorded it first
        delivered = dialect_insert(conn, notification_deliveries).values(
            notification_id=notice_id, service=service.key, sent_at=now
        )
        conn.execute(delivered.on_conflict_do_nothing())


def _give_up(engine: Engine, notice: Any, now: datetime) -> None:
    hours = f"{GIVE_UP / timedelta(hours=1):g}h"
    reason = f"not taken by every service within {hours}"
    if notice.last_error:
        reason += f": {notice.last_error}"
    with write_transaction(engine) as conn:
        conn.execute(
            update(notifications)
            .where(notifications.c.id == notice.id)
            .values(given_up_at=now, last_error=reason)
        )
    log.error("notifications: given up on %r: %s", notice.title, reason)


def _retry_later(conn: Connection, notice_id: int, now: datetime, error: str) -> None:
    attempts = conn.execute(
        select(notifications.c.attempts).where(notifications.c.id == notice_id)
    ).scalar_one()
    wait = min(FIRST_RETRY * 2**attempts, LONGEST_WAIT)
    conn.execute(
        update(notifications)
        .where(notifications.c.id == notice_id)
        .values(attempts=attempts + 1, next_attempt_at=now + wait, last_error=error)
    )


def _error_text(logged: str, urls: str, service: Service) -> str:
    """What Apprise said of a service's failure, without the URLs' secrets (they hold tokens)."""
    for url in _urls(urls):
        logged = logged.replace(url, "***")
    lines = [one_line(line.split(" - ", 2)[-1]) for line in logged.splitlines() if line.strip()]
    text = redact_text("; ".join(lines)) or "the notification service did not take it"
    return f"{service.name}: {text}"[:1000]


def _message(
    conn: Connection, event: Any, settings: ProcessorSettings, now: datetime, told: set[str]
) -> dict[str, Any] | None:
    """The notification of this event, or None when it needs nobody; `told`: the subjects
    planned in this turn, not yet written."""
    kind = NOTICES.get(EventKind(event.kind))
    if kind is None or event.dispatch_id is None:
        return None
    details = event.details or {}
    if event.kind == EventKind.DISPATCH_CHANGED and "start_time" not in details.get("changes", {}):
        return None
    facts = _dispatch(conn, event.dispatch_id)
    if facts is None:
        return None
    if kind in ACTION_NOTICES:
        return _action(conn, event, kind, facts, now, told)
    ended = facts["end"] is not None and facts["end"] <= event.occurred_at
    if kind == NoticeKind.DISPATCH_CREATED and (
        not facts["authorized"] or ended or (facts["test"] and not settings.notify_test)
    ):
        return None  # nothing to curtail (a cancellation, if any, is told as one)
    name, window = f"Dispatch {event.dispatch_id} ({facts['program']})", _window(facts)
    test = "TEST " if facts["test"] else ""
    listed = _sites(conn, event.dispatch_id)
    totals = _totals(listed)
    sites_line = f"{totals}: {_named([label for _, label, _ in listed])}"
    match kind:
        case NoticeKind.DISPATCH_CREATED:
            title, body = f"{test}{name}: curtail {totals}, {window}", sites_line
        case NoticeKind.DISPATCH_MOVED:
            title, body = f"{test}{name} moved: now {window}", sites_line
        case NoticeKind.DISPATCH_CANCELLED:
            title = f"{test}{name} cancelled"
            body = _cancelled(conn, event, facts, listed)
        case _:
            title = f"{name} vanished from the API before its end"
            body = "etl treats it as ended when it went missing; check with Voltus."
    title = shorten(one_line(title), 300)
    return _notice(now, kind, title, body, event.dispatch_id, event_id=event.id)


def _action(
    conn: Connection,
    event: Any,
    kind: NoticeKind,
    facts: dict[str, Any],
    now: datetime,
    told: set[str],
) -> dict[str, Any] | None:
    """The notification of an action's event: failing (its first failed attempt only), cleared
    (only when it was told failing), failed for good, or missed."""
    details = event.details or {}
    failing = f"action_failing:{details.get('idempotency_key')}"
    told_failing = failing in told or _told(conn, failing)
    subject = None
    if kind == NoticeKind.ACTION_FAILING:
        if told_failing:
            return None  # a later attempt failing too: told already
        subject = failing
    elif kind == NoticeKind.ACTION_CLEARED:
        if not told_failing:
            return None  # it succeeded with no failure told: nothing to clear
        subject = f"action_cleared:{details.get('idempotency_key')}"
    action = str(details.get("action", "action")).capitalize()
    what = f"{action} of {_site_name(conn, event.site_id)} for dispatch {event.dispatch_id}"
    error = _error(details.get("error") or details.get("note") or "see etl audit")
    match kind:
        case NoticeKind.ACTION_FAILING:
            title = f"{what} is failing"
            retry_at = parse_rfc3339(details["retry_at"]).astimezone(facts["zone"])
            body = f"Attempt {details['attempt']} failed: {error}\n"
            body += f"Next attempt at {retry_at.strftime('%H:%M:%S %Z')}."
        case NoticeKind.ACTION_CLEARED:
            title = f"{what} succeeded at attempt {details['attempt']}"
            body = f"The {action.lower()} that was failing is done."
        case NoticeKind.ACTION_FAILED:
            title, body = f"{what} failed", error
        case _:
            title, body = f"{what} was missed", error
    body += f"\n(etl audit --dispatch {event.dispatch_id})"
    title = shorten(one_line(title), 300)
    event_id = event.id if subject is None else None  # a subject stands in for its event
    return _notice(now, kind, title, body, event.dispatch_id, event_id=event_id, subject=subject)


def _grouped(
    conn: Connection, members: list[tuple[Any, dict[str, Any]]], now: datetime
) -> list[dict[str, Any]]:
    """The rows of the notices of one turn of one dispatch, kind and action (their events, and
    each one's notice as told alone): a single one as it is; of several, one message, carried
    by the first's row (naming ten sites and how many more, with the totals, and the first
    error), and the others' rows kept as the records of what each action was told, marked sent
    with it, so that each action is told failing once and cleared once as when told alone."""
    if len(members) == 1:
        return [members[0][1]]
    first_event, first = members[0]
    kind, dispatch_id = NoticeKind(first["kind"]), first["dispatch_id"]
    action = str((first_event.details or {}).get("action", "action"))
    listed = _labels(conn, dispatch_id, {event.site_id for event, _ in members})
    totals = _totals(listed)
    title = f"{action.capitalize()}s of {totals} for dispatch {dispatch_id} {TOLD_OF_SEVERAL[kind]}"
    title = shorten(one_line(title), 300)
    lines = [f"{totals}: {_named([label for _, label, _ in listed])}"]
    details = first_event.details or {}
    if kind == NoticeKind.ACTION_CLEARED:
        lines.append(f"The {action}s that were failing are done.")
    else:
        said = _error(details.get("error") or details.get("note") or "see etl audit")
        attempt = f", attempt {details['attempt']}" if details.get("attempt") else ""
        lines.append(f"First error ({_site_name(conn, first_event.site_id)}{attempt}): {said}")
    lines.append(f"(etl audit --dispatch {dispatch_id})")
    source = first["subject"] or f"event {first['event_id']}"
    record = f"Told with {len(members) - 1} others in the message of {source}: {title}"
    return [
        {**first, "title": title, "body": "\n".join(lines)},
        *({**notice, "body": record, "sent_at": now} for _, notice in members[1:]),
    ]


def _labels(conn: Connection, dispatch_id: str, site_ids: set[str]) -> Listed:
    """These sites of the dispatch, by name, as _sites labels them (a site since dropped from
    the dispatch too)."""
    listed = [entry for entry in _sites(conn, dispatch_id, dropped=True) if entry[0] in site_ids]
    found = {site_id for site_id, _, _ in listed}
    return listed + [(site_id, site_id, None) for site_id in sorted(site_ids - found)]


def _told(conn: Connection, subject: str) -> bool:
    found = select(notifications.c.id).where(notifications.c.subject == subject)
    return conn.execute(found).first() is not None


def _error(said: object) -> str:
    """What a handler said, as told: its secrets masked (a URL's password, a token), on one
    line, at most ERROR_CHARS characters."""
    return shorten(one_line(redact_text(str(said))), ERROR_CHARS)


def _cancelled(conn: Connection, event: Any, facts: dict[str, Any], listed: Listed) -> str:
    """What a cancellation leaves: the sites restored, or nothing curtailed; and the sites that
    stay curtailed, held by another dispatch under way (the planner's holders rule)."""
    a, ds = actions.c, dispatch_sites.c
    tried = set(
        conn.execute(
            select(a.site_id).where(
                a.dispatch_id == event.dispatch_id, a.kind == ActionKind.CURTAIL, a.attempts > 0
            )
        ).scalars()
    )
    holders = dict(
        conn.execute(
            select(ds.site_id, ds.dispatch_id).where(
                ds.holding == Holding.HELD,
                ds.dispatch_id != event.dispatch_id,
                ds.site_id.in_([site_id for site_id, _, _ in listed]),
            )
        ).all()
    )
    window = _window(facts)
    if tried:
        lines = [f"It was {window}."]
        restored = [label for site_id, label, _ in listed if site_id in tried - holders.keys()]
        if restored:
            lines.append(f"Restoring {counted(len(restored), 'site')}: {_named(restored)}.")
    elif event.occurred_at < facts["start"]:
        lines = [f"It was to run {window}.", "Cancelled before it started: nothing was curtailed."]
    else:
        lines = [f"It was {window}.", "None of its sites had been curtailed."]
    if holders:
        kept = [
            f"{label} for {holders[site_id]}" for site_id, label, _ in listed if site_id in holders
        ]
        lines.append(f"Staying curtailed for another dispatch: {_named(kept)}.")
    return "\n".join(lines)


def _dispatch(conn: Connection, dispatch_id: str) -> dict[str, Any] | None:
    d, p = dispatches.c, programs.c
    row = conn.execute(
        select(d.start_time, d.end_time, d.test, d.authorized, p.name, p.timezone)
        .join(programs, p.id == d.program_id)
        .where(d.id == dispatch_id)
    ).first()
    if row is None:
        return None
    return {
        "start": row.start_time,
        "end": row.end_time,
        "test": row.test,
        "authorized": row.authorized,
        "program": row.name,
        "zone": zone_or_utc(row.timezone),
    }


def _sites(conn: Connection, dispatch_id: str, dropped: bool = False) -> Listed:
    """The dispatch's sites, by name: those it lists now, and those it dropped if asked."""
    ds, s = dispatch_sites.c, sites.c
    query = (
        select(s.id, s.name, ds.commitment_kw)
        .join(sites, s.id == ds.site_id)
        .where(ds.dispatch_id == dispatch_id)
        .order_by(s.name)
    )
    listed = conn.execute(query if dropped else query.where(ds.removed_at.is_(None))).all()
    return [
        (site_id, f"{name} ({kw:g} kW)" if kw is not None else name, kw)
        for site_id, name, kw in listed
    ]


def _totals(listed: Listed) -> str:
    """`200 sites (2,100 kW)`: the kW the known commitments add up to."""
    sites_count = counted(len(listed), "site")
    committed = [kw for _, _, kw in listed if kw is not None]
    if not committed:
        return sites_count
    total = f"{sum(committed):,.1f}".removesuffix(".0")
    return f"{sites_count} ({total} kW)"


def _named(labels: list[str]) -> str:
    """The first MOST_SITES_NAMED, and how many more."""
    more = len(labels) - MOST_SITES_NAMED
    return ", ".join(labels[:MOST_SITES_NAMED]) + (f" and {more} more" if more > 0 else "")


def _window(facts: dict[str, Any]) -> str:
    start = facts["start"].astimezone(facts["zone"]).strftime(TIME)
    if facts["end"] is None:
        return f"from {start}, end not known yet"
    return f"{start} to {facts['end'].astimezone(facts['zone']).strftime(TIME)}"


def _site_name(conn: Connection, site_id: str | None) -> str:
    name = conn.execute(select(sites.c.name).where(sites.c.id == site_id)).scalar()
    return f"{name} ({site_id})" if name else str(site_id)
