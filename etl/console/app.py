"""The console's WSGI application: /console/... and /calendar.ics, GET only.

Who may look: anyone who reaches a loopback listener (behind a reverse proxy, the proxy's
authentication is the gate), or whoever gives ETL_CONSOLE_PASSWORD (HTTP Basic, any user name).
`access` refuses at start a console that would be open beyond loopback. Nothing the API sent is
trusted: Jinja2 escapes every value, and the pages allow no script at all (their CSP), so a
hostile site name is only ever text.
"""

import base64
import hmac
import io
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine

from etl.base.config import is_loopback
from etl.base.errors import ConfigError, EtlError
from etl.base.logs import counted
from etl.base.timeutil import utcnow, zone_or_utc
from etl.read import calendar, output, pages, status
from etl.read.reports import ReportFilter, dispatches_report, performance_report, stream
from etl.source.records import record_id

__all__ = ["CONSOLE_PATH", "Access", "ConsoleApp", "access", "refusal"]

CONSOLE_PATH = "/console/"
CALENDAR_PATH = "/calendar.ics"
# /calendar/TOKEN.ics: the calendar for an app that subscribes to it, which cannot send a password
SUBSCRIBED_PATH = "/calendar/"
# a secret part of a URL: the webhook's token, the subscribed calendar's
TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,200}")
CALENDAR_DAYS = timedelta(days=7)  # the calendar's dispatches: those that started since
REFRESH_SECONDS = 15  # "now and next" reloads itself this often
# the verdict of `etl status` atop each page is this old at most: one check serves every page
# drawn meanwhile (it looks up each site under dispatch: 2 s for 5,000 on PostgreSQL)
HEALTH_SECONDS = 5.0
MOST_PROBLEMS = 10  # of its lines shown: 5,000 sites under-delivered are 5,000 lines
MOST_QUERY = 2048  # bytes of query string read
HEADERS = [
    # no script, no frame, no outside resource: what the API sent cannot run or call out
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
REASONS |= {405: "Method Not Allowed", 503: "Service Unavailable"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Access:
    """Who may see the console: `password` set, whoever gives it; else only a loopback
    listener serves it. `enabled` False: not served at all (404)."""

    enabled: bool
    password: str | None = field(default=None, repr=False)
    # the secret of /calendar/TOKEN.ics, served to whoever knows it (None: not served)
    calendar_token: str | None = field(default=None, repr=False)


def checked_token(setting: str, token: str | None) -> str | None:
    """A secret part of a URL, as the setting gives it, checked."""
    if token is not None and not TOKEN.fullmatch(token):
        raise ConfigError(
            f"{setting} must be 16 to 200 letters, digits or ._~- (it is part of a URL)",
            "e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(24))'`",
        )
    return token


def access(
    host: str, enabled: bool, password: str | None, calendar_token: str | None = None
) -> Access:
    """The console's access rule for a listener on `host`, checked at start."""
    if password is not None and not password:
        raise ConfigError("ETL_CONSOLE_PASSWORD is empty: unset it, or give a password")
    checked_token("ETL_CALENDAR_TOKEN", calendar_token)
    if enabled and password is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the console on {host} without ETL_CONSOLE_PASSWORD: it would be "
            "open to anyone who reaches it",
            "set ETL_CONSOLE_PASSWORD, listen on 127.0.0.1 behind an authenticating proxy, or "
            "ETL_CONSOLE=off",
        )
    return Access(enabled, password, calendar_token)


def refusal(
    rule: Access, environ: dict[str, Any], start_response: StartResponse
) -> list[bytes] | None:
    """The answer to a request that `rule` keeps out (None: let it in). `etl serve`'s /status
    is behind this gate too."""
    if not rule.enabled:  # nothing of the store, not even its health, to anyone
        return _plain(start_response, 404, "not found")
    if rule.password is not None and not _gives(environ, rule.password):
        challenge = [("WWW-Authenticate", 'Basic realm="etl", charset="UTF-8"')]
        return _plain(start_response, 401, "a password is needed", challenge)
    return None


def handles(path: str) -> bool:
    shown = (CALENDAR_PATH, CONSOLE_PATH.rstrip("/"))
    return path in shown or path.startswith((CONSOLE_PATH, SUBSCRIBED_PATH))


class ConsoleApp:
    def __init__(self, engine: Engine, rule: Access, limits: status.Limits) -> None:
        self.engine, self.rule, self.limits = engine, rule, limits
        self._health_lock = threading.Lock()
        self._checked: tuple[float, status.Status | str] | None = None  # when, and the verdict
        self.templates = Environment(
            loader=PackageLoader("etl.console"),
            autoescape=select_autoescape(default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters |= {"local": _local, "exact": _exact, "iso": _iso, "kw": _kw}
        self.templates.filters |= {"count": "{:,}".format, "many": counted}
        self.templates.globals["MOST_PROBLEMS"] = MOST_PROBLEMS
        self.templates.filters["shell"] = shlex.quote  # an id in a command to copy

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(SUBSCRIBED_PATH):  # its token, not the password, lets it in
            return self._subscribed(path, environ, start_response)
        if (refused := refusal(self.rule, environ, start_response)) is not None:
            return refused
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _plain(start_response, 405, "GET only", [("Allow", "GET")])
        query = parse_qs(environ.get("QUERY_STRING", "")[:MOST_QUERY])
        one = {name: values[0] for name, values in query.items()}
        try:
            return self._route(path, one, start_response)
        except BadQuery as error:
            return _plain(start_response, 400, str(error))
        except EtlError as error:  # the store is down or locked: say so, in one line
            return _plain(start_response, 503, str(error))

    def _route(
        self, path: str, query: dict[str, str], start_response: StartResponse
    ) -> Iterable[bytes]:
        now = utcnow()
        if path == CALENDAR_PATH:
            return self._calendar(start_response, now)
        zone = _zone(query)
        # the failures as `etl status` judges them
        seen = (now, self.limits.window, self.limits.act_within, zone)
        if path in (CONSOLE_PATH, CONSOLE_PATH.rstrip("/")):
            found_now = pages.now_and_next(self.engine, *seen)
            return self._page(
                start_response, 200, "now.html", found_now.zone, page=found_now, now=now
            )
        if path == CONSOLE_PATH + "dispatch":
            number = _page_number(query)
            wanted = _stored_id(query.get("id", ""))
            page = pages.dispatch_page(self.engine, wanted, *seen, number) if wanted else None
            if page is None:
                return self._page(start_response, 404, "missing.html", zone, what="dispatch")
            chart = page.chart_svg and base64.b64encode(page.chart_svg.encode()).decode()
            return self._page(
                start_response, 200, "dispatch.html", page.zone, page=page, chart=chart, tz=zone
            )
        if path == CONSOLE_PATH + "site":
            wanted = _stored_id(query.get("id", ""))
            found = pages.site_page(self.engine, wanted, *seen) if wanted else None
            if found is None:
                return self._page(start_response, 404, "missing.html", zone, what="site")
            return self._page(start_response, 200, "site.html", found.zone, page=found)
        f = _history_filter(query)
        if path == CONSOLE_PATH + "history":
            history = pages.history_page(self.engine, f, zone)
            programs = pages.programs(self.engine, f.program_id)
            return self._page(
                start_response,
                200,
                "history.html",
                history.zone,
                page=history,
                f=f,
                programs=programs,
            )
        reports = {"dispatches.csv": dispatches_report, "performance.csv": performance_report}
        name = path.removeprefix(CONSOLE_PATH + "history/")
        if name in reports:
            return _csv(start_response, self.engine, reports[name](f), name)
        return self._page(start_response, 404, "missing.html", zone, what="page")

    def _page(
        self,
        start_response: StartResponse,
        code: int,
        template: str,
        zone: str | None,
        **values: Any,
    ) -> list[bytes]:
        """The page, named for `zone` (UTC if None), under the verdict of `etl status` with its
        times there too: one zone per page."""
        zone = zone or "UTC"
        health = self._health()
        if isinstance(health, status.Status):
            health = self.limits.shown_in(health, zone)
        body = self.templates.get_template(template).render(
            health=health, refresh=REFRESH_SECONDS, zone=zone, **values
        )
        return _send(start_response, code, "text/html; charset=utf-8", body.encode())

    def _health(self) -> status.Status | str:
        """The verdict, checked again once HEALTH_SECONDS old: by one page at a time, the others
        waiting for its answer."""
        with self._health_lock:
            if self._checked is None or time.monotonic() - self._checked[0] >= HEALTH_SECONDS:
                self._checked = (time.monotonic(), self._check())
            return self._checked[1]

    def _check(self) -> status.Status | str:
        try:
            return self.limits.check(self.engine)
        except EtlError as error:
            return str(error)

    def _calendar(self, start_response: StartResponse, now: datetime) -> Iterable[bytes]:
        body = calendar.ics(self.engine, ReportFilter(since=now - CALENDAR_DAYS), now)
        return _send(start_response, 200, "text/calendar; charset=utf-8", body)

    def _subscribed(
        self, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """/calendar/TOKEN.ics for a calendar app (Google, Outlook) that subscribes to it: the
        token, compared in constant time, is its secret; any other path there is 404."""
        token = self.rule.calendar_token
        wanted = f"{SUBSCRIBED_PATH}{token}.ics".encode()
        if not (self.rule.enabled and token and hmac.compare_digest(path.encode(), wanted)):
            return _plain(start_response, 404, "not found")
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _plain(start_response, 405, "GET only", [("Allow", "GET")])
        return self._calendar(start_response, utcnow())


class BadQuery(ValueError):
    pass


def _zone(query: dict[str, str]) -> str | None:
    """The time zone a page is asked to show its times in (?tz=), if any."""
    zone = query.get("tz", "").strip()
    if zone and not pages.known_zone(zone):
        raise BadQuery("tz is a time zone's IANA name, such as America/Chicago, or UTC")
    return zone or None


def _stored_id(given: str) -> str | None:
    """The id asked for, if the store could hold it (etl.source.records): else nothing is asked
    of the store, which would find nothing, and PostgreSQL fails a query holding a NUL."""
    return record_id({"id": given})


def _page_number(query: dict[str, str]) -> int:
    number = query.get("page", "1").strip()
    if not (number.isascii() and number.isdigit() and int(number) >= 1):
        raise BadQuery("page is a page's number, from 1")
    return int(number)


def _history_filter(query: dict[str, str]) -> ReportFilter:
    program = query.get("program", "").strip()
    if program and not (program.lstrip("-").isascii() and program.lstrip("-").isdigit()):
        raise BadQuery("program is a program's id, a whole number")
    if program and not -(2**31) <= int(program) < 2**31:
        raise BadQuery("program is out of range")
    site = query.get("site", "").strip()
    if site and _stored_id(site) is None:
        raise BadQuery("site is a site's id: at most 200 characters, none of them a control")
    return ReportFilter(program_id=int(program) if program else None, site_id=site or None)


def _csv(start_response: StartResponse, engine: Engine, query: Any, name: str) -> list[bytes]:
    """The report's rows as `etl report --format csv` writes them, times in UTC."""
    text = io.StringIO()
    output.write(stream(engine, query), [c.name for c in query.selected_columns], text, "csv")
    headers = [("Content-Disposition", f'attachment; filename="{name}"')]
    return _send(start_response, 200, "text/csv; charset=utf-8", text.getvalue().encode(), headers)


def _send(
    start_response: StartResponse,
    code: int,
    content_type: str,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *HEADERS]
    start_response(f"{code} {REASONS[code]}", headers + (extra or []))
    return [body]


def _plain(
    start_response: StartResponse,
    code: int,
    message: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = (message + "\n").encode()
    return _send(start_response, code, "text/plain; charset=utf-8", body, extra)


def _gives(environ: dict[str, Any], password: str) -> bool:
    """Whether the request's HTTP Basic credentials carry the password (any user name),
    compared in constant time."""
    scheme, _, encoded = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.partition(":")[2].encode(), password.encode())


def _local(moment: datetime | None, zone: str | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(zone_or_utc(zone)).strftime("%a %d %b %H:%M %Z")


def _exact(moment: datetime | None, zone: str | None) -> str:
    """The instant to the second, shown on hover: in the page's zone too."""
    if moment is None:
        return ""
    return moment.astimezone(zone_or_utc(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


def _kw(value: float | None) -> str:
    """One decimal, and 0.0 for what rounds to nothing from below (not -0.0)."""
    if value is None:
        return "—"
    shown = f"{value:,.1f}"
    return "0.0" if shown == "-0.0" else shown
