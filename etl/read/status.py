"""Health of the unattended job, for people and monitoring: is the data fresh, is anything
failing, is the schema current."""

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, or_, select, tuple_

from etl import __version__
from etl.act.actions import open_by_state
from etl.act.failing import ACT_WITHIN, Failing, failing
from etl.base.logs import counted, percent_of, shorten
from etl.base.timeutil import jsonable, utcnow, with_offset, zone_or_utc
from etl.base.vocabulary import ActionState, EventKind, FetchKind, FetchOutcome, Holding
from etl.handlers import ActionKind
from etl.read.reports import dispatch_performance
from etl.store import fetch_runs, outbox
from etl.store.db import read_transaction, stored_revision
from etl.store.rows import chunks
from etl.store.schema import (
    NOTIFICATION_WAITING,
    actions,
    dispatch_sites,
    dispatches,
    events,
    notifications,
    sites,
    telemetry_requests,
)

__all__ = [
    "Health",
    "Limits",
    "Status",
    "check",
    "judge",
    "notices_max_age",
]

# a share of a window's telemetry intervals below which its delivery is not judged
MIN_COVERAGE = 0.8
# a dispatch that holds sites this long with no end time has probably lost its end
OPEN_ENDED_LIMIT = timedelta(hours=24)

# readings waiting to be sent this long mean no sender runs, or the API refuses them; one held
# back for longer than this from now is no send's (its hold is 5 minutes): Voltus refused it
# whole, and etl.act.send_telemetry holds it for at least twice this long
OUTBOX_LATE = timedelta(minutes=10)
# a site under dispatch whose newest reading for Voltus is this old is late: Voltus asks for
# readings within minutes
READINGS_LATE = timedelta(minutes=5)

# of the sites no longer listed by GET /sites, those named in status's line
MOST_SITES_SHOWN = 10

# a clock further than this from the API's makes actions noticeably late or early
CLOCK_TOLERANCE_SECONDS = 10

# what the notifier judges by, as `etl status`'s defaults (`etl serve` passes its own)
NOTICES_MAX_AGE, NOTICES_WINDOW = timedelta(minutes=5), timedelta(hours=24)
# a site of a dispatch ended within the window that delivered under this percent of its
# commitment is WARNING (`etl status --min-delivery`)
MIN_DELIVERY = 50.0


class Health(IntEnum):
    """`etl status`'s verdict and exit code, as monitoring checks read them."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3  # bad usage: the check could not be made


@dataclass(frozen=True)
class Limits:
    """What the status is judged by: `etl status`'s --max-age, --window and --act-within, which
    `etl serve` and `etl console` take too, for /status, /metrics and the console."""

    max_age: timedelta = NOTICES_MAX_AGE
    window: timedelta = NOTICES_WINDOW
    act_within: timedelta = ACT_WITHIN

    def check(self, engine: Engine) -> "Status":
        return check(engine, self.max_age, self.window, act_within=self.act_within)

    def shown_in(self, status: "Status", zone: str | None) -> "Status":
        """The verdict on the facts checked, its lines' times in `zone` (a console page's)."""
        return judge(status, self.max_age, self.window, MIN_DELIVERY, zone)


@dataclass
class Status:
    checked_at: datetime
    version: str
    schema_revision: str | None
    last_success_at: datetime | None
    last_success_age_seconds: float | None
    last_failure_at: datetime | None
    last_failure_error: str | None
    actions_due_or_running: int
    restores_waiting: int
    # actions failing sites now, then past failures not acknowledged (etl.act.failing)
    failing: list[Failing]
    # dispatches the API stopped knowing before they ended, within the window
    vanished_recently: list[str]
    # dispatches holding sites for over 24 hours with no end time
    held_without_end: list[str]
    # (dispatch, site, delivered %) of recent dispatches that delivered under the minimum
    under_delivered: list[tuple[str, str, float]]
    # why telemetry is not being fetched, if it is not (see _telemetry_error)
    telemetry_error: str | None
    # how far the API's clock was ahead of this machine's at the last successful fetch
    clock_offset_seconds: float | None
    # sites GET /sites stopped listing, or never listed while a dispatch not ended names them:
    # (site, whether it was listed before, those dispatches)
    unlisted_sites: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    # readings waiting in the outbox to be sent to Voltus, and when the oldest was queued
    outbox_waiting: int = 0
    outbox_oldest_queued_at: datetime | None = None
    # of those, readings Voltus refused whole, held back for over OUTBOX_LATE from now, and when
    # the first of them is sent again
    outbox_held_back: int = 0
    outbox_held_until: datetime | None = None
    # (site, dispatch, end of its newest reading queued) of sites under dispatch now whose
    # readings, sent by etl, stopped coming
    late_readings: list[tuple[str, str, datetime]] = field(default_factory=list)
    # notifications no service has taken yet though one was tried, and the last one's error
    notifications_failing: int = 0
    notification_error: str | None = None
    # notifications given up within the window (etl.jobs.notify.GIVE_UP), and the newest one's why
    notifications_given_up: int = 0
    given_up_error: str | None = None
    problems: list[str] = field(default_factory=list)
    code: Health = Health.OK

    def as_json(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["failing"] = [{k: jsonable(v) for k, v in f.items()} for f in facts["failing"]]
        return {k: jsonable(v) for k, v in facts.items()}


def check(
    engine: Engine,
    max_age: timedelta,
    window: timedelta,
    min_delivery: float = MIN_DELIVERY,
    act_within: timedelta = ACT_WITHIN,
) -> Status:
    """The facts, gathered in one read transaction, then judged (`judge`): CRITICAL when no
    fetch succeeded within `max_age`, or a site is still not curtailed (or restored) `act_within`
    after its action fell due, or a restore gave up (etl.act.failing); WARNING when an action
    fails a site now, one ended failed or missed within `window` and no one acknowledged it, or
    a dispatch vanished within `window`, a dispatch has held sites for over
    24 hours with no end time, a site of a dispatch that ended within `window` delivered under
    `min_delivery` percent of its commitment, telemetry is not being fetched
    (`_telemetry_error`), this machine's clock is more than CLOCK_TOLERANCE_SECONDS from the
    API's, or GET /sites does not list a site it listed before or that a dispatch not ended
    names (`_unlisted_sites`), readings have waited over OUTBOX_LATE to be sent to Voltus or
    Voltus refused them whole (they are held back for longer than OUTBOX_LATE), or a site under
    dispatch has no reading for Voltus newer than READINGS_LATE
    (`_late_readings`); else OK."""
    now = utcnow()
    with read_transaction(engine) as conn:
        revision = stored_revision(conn)
        # the listings: the poll is the safety net, whatever webhooks' lookups do
        last_success = fetch_runs.last_run(conn, FetchKind.LISTING, FetchOutcome.SUCCEEDED)
        success = last_success.finished_at if last_success else None
        failure = fetch_runs.last_run(conn, FetchKind.LISTING, FetchOutcome.FAILED)
        open_counts = open_by_state(conn)
        failing_now = failing(conn, now, window, act_within)
        vanished = _vanished(conn, now - window)
        held_without_end = _held_without_end(conn, now - OPEN_ENDED_LIMIT)
        under_delivered = _under_delivered(conn, now - window, min_delivery)
        telemetry_error = _telemetry_error(conn, now - window)
        unlisted_sites = _unlisted_sites(conn, now)
        waiting = outbox.waiting(conn)
        held_back = outbox.held_back(conn, now + OUTBOX_LATE)
        late_readings = _late_readings(conn, now)
        notices_failing, notification_error = _notifications_failing(conn)
        given_up, given_up_error = _notifications_given_up(conn, now - window)
    status = Status(
        checked_at=now,
        version=__version__,
        schema_revision=revision,
        last_success_at=success,
        last_success_age_seconds=(now - success).total_seconds() if success else None,
        last_failure_at=failure.finished_at if failure else None,
        last_failure_error=failure.error if failure else None,
        actions_due_or_running=sum(
            n for state, n in open_counts.items() if state != ActionState.WAITING
        ),
        restores_waiting=open_counts.get(ActionState.WAITING, 0),
        failing=failing_now,
        vanished_recently=vanished,
        held_without_end=held_without_end,
        under_delivered=under_delivered,
        telemetry_error=telemetry_error,
        clock_offset_seconds=last_success.clock_offset_seconds if last_success else None,
        unlisted_sites=unlisted_sites,
        outbox_waiting=waiting.readings,
        outbox_oldest_queued_at=waiting.oldest_queued_at,
        outbox_held_back=held_back.readings,
        outbox_held_until=held_back.until,
        late_readings=late_readings,
        notifications_failing=notices_failing,
        notification_error=notification_error,
        notifications_given_up=given_up,
        given_up_error=given_up_error,
    )
    return judge(status, max_age, window, min_delivery)


def judge(
    status: Status,
    max_age: timedelta,
    window: timedelta,
    min_delivery: float,
    zone: str | None = None,
) -> Status:
    """The verdict on the facts gathered (pure: a new Status, the facts' own untouched): each
    problem as a line, and the code of the worst. A time a line names is in `zone` (an IANA
    name; UTC when None), with its offset: a console page shows every time in its own zone."""
    now, success = status.checked_at, status.last_success_at
    problems: list[str] = []
    if success is None:
        problems.append("CRITICAL: no fetch has succeeded yet")
    elif now - success > max_age:
        age, limit = _age(now - success), _age(max_age)
        problems.append(f"CRITICAL: the last successful fetch is {age} old (limit {limit})")
    problems += _failing_lines(status.failing, now, zone)
    if status.vanished_recently:
        problems.append(
            f"WARNING: dispatch {', '.join(status.vanished_recently)} vanished from the API "
            f"before it ended (in the last {_age(window)}): treated as ended when it went missing"
        )
    if status.held_without_end:
        problems.append(
            f"WARNING: dispatch {', '.join(status.held_without_end)} has held sites for over "
            f"{_age(OPEN_ENDED_LIMIT)} with no end time"
        )
    for dispatch_id, site_id, percent in status.under_delivered:
        problems.append(
            f"WARNING: site {site_id} delivered {percent_of(percent)} of its commitment to "
            f"dispatch {dispatch_id} (under {min_delivery:g}%, by its metered load)"
        )
    if status.telemetry_error:
        problems.append(f"WARNING: telemetry is not being fetched: {status.telemetry_error}")
    gone = [site_id for site_id, was_listed, _ in status.unlisted_sites if was_listed]
    if gone:
        shown = ", ".join(gone[:MOST_SITES_SHOWN])
        more = f" and {len(gone) - MOST_SITES_SHOWN} more" if len(gone) > MOST_SITES_SHOWN else ""
        problems.append(
            f"WARNING: site {shown}{more} no longer listed by GET /sites: the API key's account "
            "gets no dispatch for a site it does not list; ask Voltus"
        )
    for site_id, _, dispatch_ids in status.unlisted_sites:
        if dispatch_ids:
            problems.append(
                f"WARNING: dispatch {', '.join(dispatch_ids)} names site {site_id}, which GET "
                "/sites does not list"
            )
    oldest = status.outbox_oldest_queued_at
    if oldest is not None and now - oldest > OUTBOX_LATE:
        problems.append(
            f"WARNING: {status.outbox_waiting} readings wait to be sent to Voltus, the oldest "
            f"queued {_age(now - oldest)} ago: is etl run or etl serve running, and the API "
            "taking them?"
        )
    held_until = status.outbox_held_until
    if status.outbox_held_back and held_until is not None:
        problems.append(
            f"WARNING: Voltus refused {status.outbox_held_back} readings whole, taking none of "
            f"their endpoint's: they stay queued, sent again in {_age(held_until - now)} (the "
            "error of etl telemetry send or etl run says why)"
        )
    for site_id, dispatch_id, newest in status.late_readings:
        problems.append(
            f"WARNING: site {site_id} is under dispatch {dispatch_id}, and its newest reading "
            f"for Voltus ended {_age(now - newest)} ago (Voltus measures the response by them)"
        )
    if status.notifications_failing:
        problems.append(
            f"WARNING: {status.notifications_failing} notifications have not reached their "
            f"service (ETL_NOTIFY_URLS); they are tried again: {status.notification_error}"
        )
    if status.notifications_given_up:
        problems.append(
            f"WARNING: {status.notifications_given_up} notifications were given up in the last "
            f"{_age(window)}: {status.given_up_error}"
        )
    offset = status.clock_offset_seconds
    if offset is not None and abs(offset) > CLOCK_TOLERANCE_SECONDS:
        behind, late = ("behind", "late") if offset > 0 else ("ahead of", "early")
        problems.append(
            f"WARNING: this machine's clock is {abs(offset):.0f} s {behind} the API's: actions "
            f"run that much {late}; keep it in time (NTP)"
        )
    if any(p.startswith("CRITICAL") for p in problems):
        code = Health.CRITICAL
    else:
        code = Health.WARNING if problems else Health.OK
    return replace(status, problems=problems, code=code)


def _vanished(conn: Connection, since: datetime) -> list[str]:
    # no DISTINCT: it would lead the database to walk every event in dispatch order rather than
    # the window's in time order
    found = conn.execute(
        select(events.c.dispatch_id).where(
            events.c.occurred_at >= since, events.c.kind == EventKind.DISPATCH_VANISHED
        )
    ).scalars()
    return sorted({d for d in found if d is not None})


def _telemetry_error(conn: Connection, since: datetime) -> str | None:
    """Why telemetry is not being fetched, if it is not: a pass failed within the window and
    none has succeeded since (the API down, say), or the API refused a window at its last ask
    within the window (passes in between succeed: a refused window is asked again only hours
    later)."""
    failure = fetch_runs.last_run(conn, FetchKind.TELEMETRY, FetchOutcome.FAILED, since)
    if failure is not None and not fetch_runs.succeeded_after(
        conn, FetchKind.TELEMETRY, failure.finished_at
    ):
        return failure.error
    asked = telemetry_requests.c
    refused = conn.execute(
        select(asked.dispatch_id, asked.site_id, asked.refused)
        .where(asked.refused.is_not(None), asked.asked_at >= since)
        .order_by(asked.asked_at.desc())
        .limit(1)
    ).first()
    if refused is None:
        return None
    return f"telemetry of dispatch {refused.dispatch_id}, site {refused.site_id}: {refused.refused}"


def _under_delivered(
    conn: Connection, ended_since: datetime, min_delivery: float
) -> list[tuple[str, str, float]]:
    """Sites of dispatches that ended since then whose metered response fell short; judged only
    with most of their readings in (at least MIN_COVERAGE of the intervals), and only where etl
    called the handler to curtail the site: one it never acted on (a test, history, cancelled,
    missed: told of as such) was not asked to deliver."""
    v = dispatch_performance.c
    short = conn.execute(
        select(v.dispatch_id, v.site_id, v.delivered_pct)
        .where(
            v.end_time >= ended_since,
            v.coverage >= MIN_COVERAGE,
            v.delivered_pct < min_delivery,
        )
        .order_by(v.end_time, v.dispatch_id, v.site_id)
    ).all()
    if not short:
        return []
    asked: set[tuple[str, str]] = set()
    for pairs in chunks({(row.dispatch_id, row.site_id) for row in short}):
        rows = conn.execute(
            select(actions.c.dispatch_id, actions.c.site_id).where(
                tuple_(actions.c.dispatch_id, actions.c.site_id).in_(pairs),
                actions.c.kind == ActionKind.CURTAIL,
                actions.c.attempts > 0,
            )
        )
        asked.update((row.dispatch_id, row.site_id) for row in rows)
    return [tuple(row) for row in short if (row.dispatch_id, row.site_id) in asked]


def _held_without_end(conn: Connection, started_before: datetime) -> list[str]:
    found = conn.execute(
        select(dispatches.c.id)
        .join(dispatch_sites, dispatch_sites.c.dispatch_id == dispatches.c.id)
        .where(
            dispatch_sites.c.holding == Holding.HELD,
            dispatches.c.end_time.is_(None),
            dispatches.c.start_time < started_before,
        )
        .distinct()
    ).scalars()
    return sorted(found)


def _listed_by_a_dispatch_not_ended(now: datetime) -> ColumnElement[bool]:
    """A row of dispatch_sites (joined to its dispatch) that the dispatch still lists, the
    dispatch authorized and its end unknown or to come."""
    d = dispatches.c
    return and_(
        dispatch_sites.c.removed_at.is_(None),
        d.authorized.is_(True),
        or_(d.end_time.is_(None), d.end_time > now),
    )


def _unlisted_sites(conn: Connection, now: datetime) -> list[tuple[str, bool, list[str]]]:
    """Sites the last GET /sites answer did not list that it listed before, or that a dispatch
    not ended (authorized, its end unknown or to come) names."""
    s, ds, d = sites.c, dispatch_sites.c, dispatches.c
    unlisted = conn.execute(
        select(s.id, s.listed_since).where(s.unlisted_since.is_not(None)).order_by(s.id)
    ).all()
    if not unlisted:
        return []
    named: dict[str, list[str]] = {}
    for site_id, dispatch_id in conn.execute(
        select(ds.site_id, ds.dispatch_id)
        .join(sites, s.id == ds.site_id)
        .join(dispatches, d.id == ds.dispatch_id)
        .where(s.unlisted_since.is_not(None), _listed_by_a_dispatch_not_ended(now))
        .order_by(ds.dispatch_id)
    ):
        named.setdefault(site_id, []).append(dispatch_id)
    return [
        (row.id, row.listed_since is not None, named.get(row.id, []))
        for row in unlisted
        if row.listed_since is not None or row.id in named
    ]


def _late_readings(conn: Connection, now: datetime) -> list[tuple[str, str, datetime]]:
    """Sites under an authorized dispatch now that etl sends readings of, whose newest ended
    more than READINGS_LATE ago."""
    ds, d = dispatch_sites.c, dispatches.c
    under = conn.execute(
        select(ds.site_id, ds.dispatch_id)
        .join(dispatches, d.id == ds.dispatch_id)
        .where(_listed_by_a_dispatch_not_ended(now), d.start_time <= now)
        .order_by(ds.site_id, ds.dispatch_id)
    ).all()
    newest = outbox.newest_readings(conn, {row.site_id for row in under})
    return [
        (row.site_id, row.dispatch_id, newest[row.site_id])
        for row in under
        if row.site_id in newest and now - newest[row.site_id] > READINGS_LATE
    ]


def _notifications_failing(conn: Connection) -> tuple[int, str | None]:
    """Notifications waiting after a failed delivery (from the index of those waiting), and
    the newest failure's error."""
    n = notifications.c
    rows = conn.execute(
        select(n.last_error)
        .where(NOTIFICATION_WAITING, n.attempts > 0)
        .order_by(n.next_attempt_at.desc())
    ).all()
    return len(rows), (rows[0].last_error if rows else None)


def _notifications_given_up(conn: Connection, since: datetime) -> tuple[int, str | None]:
    """Notifications given up since then, and the newest one's reason (a scan: they are few)."""
    n = notifications.c
    rows = conn.execute(
        select(n.last_error).where(n.given_up_at >= since).order_by(n.given_up_at.desc())
    ).all()
    return len(rows), (rows[0].last_error if rows else None)


# of the actions failing or failed, those given a line each; the others are counted
MOST_FAILING_SHOWN = 10


def _failing_lines(found: list[Failing], now: datetime, zone: str | None) -> list[str]:
    """A line for each action failing a site (CRITICAL once it is late), the first
    MOST_FAILING_SHOWN of them, then how many more."""
    lines = [_failing_line(failed, now, zone) for failed in found[:MOST_FAILING_SHOWN]]
    more = found[MOST_FAILING_SHOWN:]
    if more:
        level = "CRITICAL" if any(failed.late for failed in more) else "WARNING"
        those = counted(len(more), "more action")
        lines.append(f"{level}: and {those} failing or failed (etl status --json)")
    return lines


def _failing_line(failed: Failing, now: datetime, zone: str | None) -> str:
    what = f"{failed.kind} of site {failed.site_id} for dispatch {failed.dispatch_id}"
    if not failed.live:
        ended = "was missed" if failed.state == ActionState.MISSED else "ended failed"
        said = f"the {what} {ended} (etl ack once seen to)"
    elif failed.state == ActionState.FAILED:
        said = f"the {what} gave up after {failed.attempts} attempts (etl ack once seen to)"
    else:
        said = f"the {what} is not done {_age(now - failed.due_since)} after it fell due"
        if failed.failing_since is not None:
            since = _moment(failed.failing_since, zone)
            attempts = "1 attempt" if failed.attempts == 1 else f"{failed.attempts} attempts"
            said += f", failing since {since} ({attempts})"
    if failed.error:
        said += f": {shorten(failed.error, 200)}"
    return f"{'CRITICAL' if failed.late else 'WARNING'}: {said}"


def _moment(moment: datetime, zone: str | None) -> str:
    """An instant to the second in the zone, with its offset: 2026-12-07T06:14:44-06:00, or
    2026-12-07T12:14:44Z in UTC."""
    return with_offset(moment.astimezone(zone_or_utc(zone)).replace(microsecond=0).isoformat())


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def notices_max_age(every: float | None) -> timedelta:
    """How old the last fetch may be before the notifier calls it CRITICAL: the status default,
    or three turns of a loop that fetches less often."""
    return max(NOTICES_MAX_AGE, timedelta(seconds=3 * (every or 0)))
