"""The Voltus REST API client: authentication, timeouts, bounded retries, and typed results."""

import email.utils
import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlencode

import requests

from etl import __version__
from etl.base.config import ApiSettings
from etl.base.errors import ApiError
from etl.base.logs import log, shorten
from etl.base.payloads import fingerprint
from etl.base.redact import MASK, redact_text, redact_url
from etl.base.timeutil import format_rfc3339, utcnow
from etl.source.jsonscan import items_one_by_one
from etl.source.records import SiteBatch, TelemetryBatch, parse_sites, parse_telemetry

__all__ = [
    "API_VERSION",
    "WEBHOOK_EVENTS",
    "Listing",
    "RetryPolicy",
    "VoltusClient",
    "Webhook",
    "clock_offset",
]

API_VERSION = "2022-04-15"
# a telemetry answer longer than this per site, meter and interval is not one: it is refused
# before it is parsed
MOST_METERS_PER_SITE, MOST_BYTES_PER_READING = 10, 256


@dataclass
class Listing:
    """The dispatches list response: the fingerprint of its body, and its items as sent (parsed
    from the body only when asked: a body identical to the last one stored is not parsed). Once
    parsed, the body is let go: 8 MB at 10,000 dispatches, a tenth of a first load's memory."""

    fingerprint: str
    body: bytes = field(repr=False)
    url: str
    # how far the API's clock was ahead of this machine's when it answered (negative: behind)
    clock_offset: float | None = None

    @cached_property
    def items(self) -> list[Any]:
        items = _items(self.body, self.url, "dispatches")
        self.body = b""
        return items


WEBHOOK_EVENTS = ("dispatch.create", "dispatch.update")


@dataclass(frozen=True)
class Webhook:
    """A registration: Voltus POSTs a notification of these events to this URL."""

    id: str
    url: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class _Answer:
    body: bytes
    clock_offset: float | None  # of the server that answered: see clock_offset()


RETRYABLE_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries are bounded both in count and in total time, so a cron run never piles up."""

    attempts: int = 5
    total_seconds: float = 45.0
    base_delay: float = 1.0
    max_delay: float = 15.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Exponential, with jitter so that many clients do not retry in step."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


class VoltusClient:
    def __init__(
        self,
        settings: ApiSettings,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(
            {
                "X-Voltus-API-Key": settings.key,
                "Accept": "application/json",
                "User-Agent": f"etl/{__version__}",
            }
        )

    def dispatches(self) -> Listing:
        """All dispatches of the last 24 hours, as sent: ingest validates each one it has not
        seen before."""
        path = f"/{API_VERSION}/dispatches"
        answer = self._send("GET", path)
        assert answer is not None
        body = answer.body
        return Listing(fingerprint(body), body, self.settings.url + path, answer.clock_offset)

    def dispatch(self, dispatch_id: str) -> Any | None:
        """One dispatch as sent (ingest validates it), or None when the API does not know it."""
        path = f"/{API_VERSION}/dispatches/{quote(dispatch_id, safe='')}"
        body = self._get(path, not_found_is_none=True)
        return None if body is None else _decode(body, self.settings.url + path)

    def webhooks(self) -> list[Webhook]:
        url = f"{self.settings.url}/{API_VERSION}/webhooks"
        return [_webhook(item, url) for item in self._listed("webhooks")]

    def register_webhook(self, url: str) -> Webhook:
        """Register `url` for dispatch.create and dispatch.update. Sent once, never retried: a
        retry after a lost answer would register the URL twice."""
        path = f"/{API_VERSION}/webhooks"
        payload = {"url": url, "events": [{"name": name} for name in WEBHOOK_EVENTS]}
        answer = self._send("POST", path, payload)
        assert answer is not None
        return _webhook(_decode(answer.body, self.settings.url + path), self.settings.url + path)

    def create_test_dispatch(
        self, start: datetime, end: datetime, program_id: int | None = None
    ) -> None:
        """Have Voltus create a test dispatch (`test` true) of the account's sites registered in
        the program (its test program when none is given). Sent once, never retried: a retry
        after a lost answer would create a second one."""
        payload: dict[str, Any] = {
            "start_time": format_rfc3339(start),
            "end_time": format_rfc3339(end),
        }
        if program_id is not None:
            payload["program_id"] = program_id
        self._send("POST", f"/{API_VERSION}/dispatches", payload)

    def post_telemetry(self, controllable_load: bool, points: list[dict[str, Any]]) -> None:
        """Send readings (POST /telemetry, or /telemetry/controllable-load). Retried like a GET:
        "We'll handle the de-duplication of double-submitted points" (the reference). A 413
        (too many points) is an ApiError with that status, for the caller to split."""
        if controllable_load:
            path, field = f"/{API_VERSION}/telemetry/controllable-load", "controllable_load"
        else:
            path, field = f"/{API_VERSION}/telemetry", "telemetry"
        self._send("POST", path, {field: points}, retried=True)

    def delete_webhook(self, webhook_id: str) -> bool:
        """False when the API knows no such registration."""
        path = f"/{API_VERSION}/webhooks/{quote(webhook_id, safe='')}"
        return self._send("DELETE", path, not_found_is_none=True) is not None

    def telemetry(
        self, site_ids: list[str], start: datetime, end: datetime, interval_seconds: int
    ) -> TelemetryBatch:
        """The readings of the intervals that end in (start, end], for at most 10 sites; the
        caller aligns the times and keeps within the API's point limit."""
        query = urlencode(
            [("site_id", site_id) for site_id in site_ids]
            + [
                ("start_time", format_rfc3339(start)),
                ("end_time", format_rfc3339(end)),
                ("interval_seconds", str(interval_seconds)),
            ]
        )
        path = f"/{API_VERSION}/telemetry/kw?{query}"
        body = self._get(path)
        assert body is not None
        points = math.ceil((end - start).total_seconds() / interval_seconds)
        most = len(site_ids) * MOST_METERS_PER_SITE * points * MOST_BYTES_PER_READING
        if len(body) > most:  # parsed, 200,000 readings took 347 MB
            raise ApiError(
                f"unexpected telemetry from {redact_url(self.settings.url)}: {len(body):,} bytes "
                f"for {points} intervals of {len(site_ids)} sites, more than they could need "
                f"({most:,})",
                status=200,  # an answer, about this request: the other windows are still asked
            )
        try:
            return parse_telemetry(_decode(body, self.settings.url + path))
        except ValueError as error:
            raise ApiError(
                f"unexpected telemetry from {redact_url(self.settings.url)}: {error}"
            ) from None

    def sites(self) -> SiteBatch:
        return parse_sites(self._listed("sites"))

    def _listed(self, resource: str) -> list[Any]:
        """The `resource` list that GET /{API_VERSION}/{resource} answers."""
        path = f"/{API_VERSION}/{resource}"
        body = self._get(path)
        assert body is not None
        return _items(body, self.settings.url + path, resource)

    def _get(self, path: str, not_found_is_none: bool = False) -> bytes | None:
        answer = self._send("GET", path, not_found_is_none=not_found_is_none)
        return None if answer is None else answer.body

    def _send(
        self,
        method: str,
        path: str,
        payload: Any = None,
        not_found_is_none: bool = False,
        retried: bool = False,
    ) -> _Answer | None:
        """A 2xx answer (None for a 404 when `not_found_is_none`). Retried as the policy says,
        except a POST, which is not idempotent, unless `retried` says the API takes it twice."""
        url = self.settings.url + path
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        deadline = time.monotonic() + self.policy.total_seconds
        attempts = 1 if method == "POST" and not retried else self.policy.attempts
        for attempt in range(1, attempts + 1):
            retry_after = None
            started, sent_at = time.monotonic(), time.time()
            try:
                response = self._session.request(method, url, json=payload, timeout=timeout)
            except RETRYABLE_ERRORS as error:
                problem = f"{type(error).__name__} ({_first_line(error)})"
                _log_attempt(method, path, attempt, started, problem)
            else:
                _log_attempt(method, path, attempt, started, response.status_code)
                if 200 <= response.status_code < 300:
                    offset = clock_offset(response.headers, sent_at, time.time())
                    return _Answer(response.content, offset)
                if response.status_code == 404 and not_found_is_none:
                    return None
                if response.status_code != 429 and response.status_code < 500:
                    raise self._fatal(method, response, url)
                problem = f"HTTP {response.status_code}{self._message(response)}"
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            delay = retry_after if retry_after is not None else self.policy.backoff(attempt)
            if attempt == attempts or time.monotonic() + delay > deadline:
                raise ApiError(
                    self._scrub(f"{method} {url} failed after {attempt} attempts: {problem}"),
                    "the API is unreachable or overloaded; the next run will try again",
                )
            log.info("%s %s: %s; retrying in %.1f s", method, path, self._scrub(problem), delay)
            self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _fatal(self, method: str, response: requests.Response, url: str) -> ApiError:
        status = response.status_code
        hints = {
            400: "the request was refused; is VOLTUS_API_KEY set?",
            401: "the API key was refused; check VOLTUS_API_KEY",
            403: "the API key was refused; check VOLTUS_API_KEY",
            404: "check VOLTUS_API_URL, e.g. https://api.voltus.co (no path)",
        }
        return ApiError(
            self._scrub(f"{method} {url} failed: HTTP {status}{self._message(response)}"),
            hints.get(status, "this is not retried"),
            status=status,
        )

    def _message(self, response: requests.Response) -> str:
        """The API's own `{"message": ...}` when it sent one, for the error line."""
        try:
            message = response.json().get("message")
        except (ValueError, AttributeError):
            return ""
        return f": {message}" if isinstance(message, str) and message else ""

    def _scrub(self, text: str) -> str:
        """The message without the key, and without the credentials of any URL it quotes (the
        API's, or one that requests or the API's error body names)."""
        text = text.replace(self.settings.url, redact_url(self.settings.url))
        return redact_text(text.replace(self.settings.key, MASK) if self.settings.key else text)


def _log_attempt(method: str, path: str, attempt: int, started: float, status: int | str) -> None:
    """-v: each request, by path only: the key travels in a header and is never logged."""
    duration_ms = round((time.monotonic() - started) * 1000)
    log.debug(
        "%s %s: %s in %d ms (attempt %d)",
        method,
        path,
        status,
        duration_ms,
        attempt,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "attempt": attempt,
        },
    )


def _webhook(item: Any, url: str) -> Webhook:
    try:
        events = tuple(e["name"] if isinstance(e, dict) else str(e) for e in item["events"])
        return Webhook(str(item["id"]), str(item["url"]), events)
    except (KeyError, TypeError) as error:
        raise ApiError(
            f"unexpected webhook from {redact_url(url)}: no {error}", "is VOLTUS_API_URL the API?"
        ) from None


def clock_offset(headers: Mapping[str, str], sent_at: float, received_at: float) -> float | None:
    """How many seconds the server's clock, by an answer's `Date` header, is ahead of this
    machine's (negative: behind), beyond what the round trip and the header's whole seconds
    leave open: 0 when the two could agree. None without a Date that parses. A cache's answer
    says with `Age` how long ago the server dated it."""
    date, age = headers.get("Date"), headers.get("Age", "0")
    moment = _http_date(date) if date else None
    if moment is None:
        return None
    api_time = moment.timestamp() + (int(age) if _is_number(age) and len(age) < 10 else 0)
    if api_time > received_at:
        return api_time - received_at
    if api_time < sent_at - 1:  # the header drops the fraction of its second
        return api_time - (sent_at - 1)
    return 0.0


def _parse_int(digits: str) -> int | float:
    """An integer of the body; one too long for any field (and for Python's conversion limit,
    which would fail the whole body) becomes infinity, which validation sets aside."""
    return int(digits) if len(digits) <= 100 else math.inf


def _decode(body: bytes, url: str, resource: str | None = None) -> Any:
    """The body's JSON. One nested too deep for the parser fails, unless it is the `resource`
    list of a listing: then its records are read one by one, and only those too deep are lost
    (they are set aside, as records.TooDeep)."""
    try:
        return json.loads(body, parse_int=_parse_int)
    except ValueError:
        raise ApiError(
            f"GET {redact_url(url)} answered with a body that is not JSON",
            "is VOLTUS_API_URL the Voltus API?",
        ) from None
    except RecursionError:
        pass
    try:
        if resource is not None:
            return {resource: items_one_by_one(body.decode(), resource, _parse_int)}
    except (ValueError, RecursionError):
        pass
    raise ApiError(f"GET {redact_url(url)} answered with JSON nested too deep to read")


def _items(body: bytes, url: str, resource: str) -> list[Any]:
    decoded = _decode(body, url, resource)
    items = decoded.get(resource) if isinstance(decoded, dict) else None
    if not isinstance(items, list):
        raise ApiError(
            f"unexpected response from {redact_url(url)}: no '{resource}' list",
            "is VOLTUS_API_URL the Voltus API?",
        )
    return items


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either a number of seconds or an HTTP date."""
    if not value:
        return None
    if _is_number(value.strip()):
        return float(value)
    when = _http_date(value)
    return None if when is None else max(0.0, (when - utcnow()).total_seconds())


def _is_number(value: str) -> bool:
    """Whether a header's value is a number of seconds: ASCII digits only (str.isdigit() also
    takes digits such as '²' that int() and float() refuse)."""
    return value.isascii() and value.isdigit()


def _http_date(value: str) -> datetime | None:
    """An HTTP date (of Date or Retry-After) as an aware time; None when it does not parse."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # "-0000": a time given in UTC


# the system's reason a connection failed (`[Errno 111] Connection refused`, `[Errno -2] Name or
# service not known`), deep in the repr of the errors that wrap it
CONNECTION_FAILURE = re.compile(r"\[Errno -?\d+\] [^\"')]+")


def _first_line(error: Exception) -> str:
    """Why a request failed, in a few words: a connection's own reason when there is one
    (`[Errno 111] Connection refused`), else the first line of the error, cut between words."""
    text = str(error).strip()
    if not text:
        return "no detail"
    reason = CONNECTION_FAILURE.search(text)
    if reason:
        return f"cannot connect: {reason.group(0).strip()}"
    return shorten(text.splitlines()[0], 200)
