"""`etl serve`: the long-running mode. It polls as `etl run --every` does (the safety net), and
listens for Voltus's webhooks: each names one dispatch, which is looked up at once, through the
same ingest path as a listing, and then acted on.

Voltus signs nothing and delivers at least once, so a notification is only a hint to fetch: its
body never reaches the store, only a dispatch id of the expected shape, looked up at the
configured API. Notifications are answered before any fetch, and coalesced: those that arrive
while a fetch is under way wait for the next one, a burst for one dispatch is one lookup, and a
burst naming many dispatches is one listing. One thread fetches, so a 429's pause holds for all.

/healthz is liveness, for a load balancer or a supervisor: up or down, nothing more. The verdict
of `etl status` is /status, behind the console's gate. The console's pages, /status and /metrics
each take a server thread while they are drawn (each reads the store at length): at most
DRAWN_AT_ONCE of them at once, so that /healthz and the webhook always find a thread free.

Only `etl serve` imports this module (and so waitress and prometheus_client).
"""

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Histogram, disable_created_metrics
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from etl.act import processor
from etl.base import logs
from etl.base.config import ProcessorSettings, is_loopback
from etl.base.errors import ConfigError, EtlError
from etl.base.logs import log
from etl.base.redact import redact_url
from etl.console import app as console
from etl.console.app import Access, access, checked_token
from etl.handlers import ActionRequest, Handler
from etl.ingest import dispatches
from etl.jobs import runner
from etl.read import metrics, status
from etl.source.api import WEBHOOK_EVENTS
from etl.store.db import read_transaction

__all__ = ["console_listener", "listener", "serve", "serve_console"]

WEBHOOK_PATH = "/voltus/webhook"
MAX_BODY = 16 * 1024  # a notification is under 200 bytes
BODY_READ_LIMIT = 64 * MAX_BODY  # what the server reads before etl refuses it; beyond: waitress
# a request must arrive whole this soon after its first byte, or its client is disconnected
# (within a second more): slow clients cannot hold the listener's connections
REQUEST_SECONDS = 5
# a notification's `resource`, of any API version (the dispatch is looked up in etl's own)
DISPATCH_RESOURCE = re.compile(r"/\d{4}-\d{2}-\d{2}/dispatches/([A-Za-z0-9_-]{1,200})")
DEFAULT_PORTS = {"http": 80, "https": 443}
# more dispatches than this waiting at once: one listing fetches them all
MOST_LOOKUPS = 5
STATUS_PATH = "/status"
THREADS = 4  # the server's, answering requests
# console pages, /status and /metrics drawn at once; more are answered 503 at once, to be asked
# again: the other threads stay free for /healthz and the webhook (six 5,000-site pages at once
# held /healthz for 56 s)
DRAWN_AT_ONCE = THREADS - 2
RETRY_SECONDS = 1
# /healthz waits this long for the store to answer its read, then says down
STORE_SECONDS = 2.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    token: str | None
    console: Access  # who may see the console and the calendar

    @property
    def webhook_path(self) -> str:
        return f"{WEBHOOK_PATH}/{self.token}" if self.token else WEBHOOK_PATH


def listener(
    listen: str,
    token: str | None,
    console_password: str | None = None,
    console: bool = True,
    calendar_token: str | None = None,
) -> Listener:
    """`HOST:PORT` and the token, checked: a listener reachable from other machines must have
    a token, the secret part of the path that Voltus is told to POST to, and a console there
    a password (`access`)."""
    host, port = _address(listen)
    checked_token("ETL_WEBHOOK_TOKEN", token)
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without ETL_WEBHOOK_TOKEN: Voltus signs nothing, so "
            "the secret path is what keeps strangers from triggering fetches",
            "set ETL_WEBHOOK_TOKEN, or listen on 127.0.0.1 behind a proxy",
        )
    return Listener(host, port, token, access(host, console, console_password, calendar_token))


def console_listener(
    listen: str, console_password: str | None, calendar_token: str | None = None
) -> Listener:
    """`etl console`'s: no webhook, and the console's own rule."""
    host, port = _address(listen)
    return Listener(host, port, None, access(host, True, console_password, calendar_token))


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:8080
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"ETL_LISTEN is not HOST:PORT: {listen[:80]!r}", "e.g. 127.0.0.1:8080")
    return host, int(port)


class Notifications:
    """Dispatch ids waiting to be looked up, each with when it was first notified."""

    def __init__(self) -> None:
        self._waiting: dict[str, float] = {}
        self._changed = threading.Condition()

    def add(self, dispatch_id: str) -> None:
        with self._changed:
            self._waiting.setdefault(dispatch_id, time.monotonic())
            self._changed.notify()

    def take(self, timeout: float) -> dict[str, float]:
        """All that wait, once some do (or {} after `timeout`)."""
        with self._changed:
            self._changed.wait_for(lambda: self._waiting, timeout)
            taken, self._waiting = self._waiting, {}
            return taken


class ServerMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # a `_created` series beside each counter: noise here
        self.registry = CollectorRegistry(auto_describe=False)
        self.received = Counter(
            "etl_webhooks_received",
            "Webhook notifications received, by what was done with them",
            ["outcome"],
            registry=self.registry,
        )
        self.to_handler = Histogram(
            "etl_webhook_to_handler_seconds",
            "From a notification's arrival to the first handler call for its dispatch",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )


class TimedHandler:
    """The handler, noting for each notified dispatch how long its first call took to come,
    when it comes in the pass that the notification led to; and that a call returned (`handled`):
    a long pass (200 sites behind a dead gateway) is a loop at work, not a stuck one."""

    def __init__(self, handler: Handler, histogram: Histogram, handled: "Heartbeat") -> None:
        self.handler, self.histogram, self.handled = handler, histogram, handled
        self._notified: dict[str, float] = {}
        self._lock = threading.Lock()

    def expect(self, notified: dict[str, float]) -> None:
        with self._lock:
            self._notified.update(notified)

    def forget(self, dispatch_ids: Iterable[str]) -> None:
        """A later call (a restore at the dispatch's end) is not this notification's doing."""
        with self._lock:
            for dispatch_id in dispatch_ids:
                self._notified.pop(dispatch_id, None)

    def __call__(self, request: ActionRequest) -> str | None:
        with self._lock:
            notified = self._notified.pop(request.dispatch_id, None)
        if notified is not None:
            self.histogram.observe(time.monotonic() - notified)
        try:
            return self.handler(request)
        finally:
            self.handled.beat()


class Heartbeat:
    """When a loop last turned: /healthz says down once it has not for `bound` seconds."""

    def __init__(self, name: str, bound: float) -> None:
        self.name, self.bound = name, bound
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()


def _turn_bound(every: float, settings: ProcessorSettings) -> float:
    """How long a loop may go without turning before it counts as stuck, not busy: a turn sleeps
    up to `every`, waits for the API (a request's retries end within about a minute), and for
    the pass's handlers (each done within the claim timeout, or its action is another's)."""
    return max(3 * every, 60.0) + settings.claim_timeout


class StoreRead:
    """One trivial read of the store, in a daemon thread of its own: a store that hangs (a
    network gone silent) holds that thread, never the listener's, nor the process's exit."""

    def __init__(self, engine: Engine) -> None:
        self.done = threading.Event()
        self.error: str | None = "the read ended on an unexpected error"  # until it succeeds
        threading.Thread(
            target=self._read, args=(engine,), name="etl-store-read", daemon=True
        ).start()

    def _read(self, engine: Engine) -> None:
        try:
            with read_transaction(engine) as conn:
                # a table, not `SELECT 1`: SQLite answers that without reading its file
                conn.execute(text("SELECT 1 FROM alembic_version"))
            self.error = None
        except (EtlError, SQLAlchemyError) as error:  # SQLAlchemy's own: its pool timed out
            self.error = str(error)
        finally:
            self.done.set()


class Liveness:
    """/healthz: up while each loop turns (or its pass's handlers return) and the store answers
    a read within STORE_SECONDS. Why it is down goes to the log once, when it goes down, never
    to whoever asks."""

    def __init__(self, engine: Engine, loops: tuple[Heartbeat, ...], handled: Heartbeat) -> None:
        self.engine, self.loops, self.handled = engine, loops, handled
        self._lock = threading.Lock()
        self._read: StoreRead | None = None
        self._down = False

    def up(self) -> bool:
        why = self._why_down()
        with self._lock:
            fell, rose = why is not None and not self._down, why is None and self._down
            self._down = why is not None
        if fell:
            log.warning("/healthz is down: %s", why)
        elif rose:
            log.info("/healthz is up again")
        return why is None

    def _why_down(self) -> str | None:
        now = time.monotonic()
        for loop in self.loops:
            silent = now - loop.last
            if silent > loop.bound and now - self.handled.last > loop.bound:
                return f"the {loop.name} loop has not turned for {silent:.0f} s"
        with self._lock:  # one read at a time: those asking meanwhile wait for its answer
            if self._read is None or self._read.done.is_set():
                self._read = StoreRead(self.engine)
            read = self._read
        if not read.done.wait(STORE_SECONDS):
            return f"the store did not answer a read within {STORE_SECONDS:g} s"
        return read.error


class WebhookApp:
    """The WSGI application: the webhook, /healthz, /status, /metrics and the console."""

    def __init__(
        self,
        engine: Engine,
        where: Listener,
        notifications: Notifications,
        server_metrics: ServerMetrics,
        limits: status.Limits,
        api_url: str,
        liveness: Liveness,
    ) -> None:
        self.engine, self.where, self.notifications = engine, where, notifications
        self.metrics, self.limits, self.api_url = server_metrics, limits, api_url
        self.liveness = liveness
        drawing = AtOnce(DRAWN_AT_ONCE)
        self.console = drawing.wrap(console.ConsoleApp(engine, where.console, limits))
        self.status_page, self.metrics_page = (
            drawing.wrap(self._status),
            drawing.wrap(self._metrics),
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path.startswith(WEBHOOK_PATH):
            # compared in constant time: the path holds the token
            if not hmac.compare_digest(path.encode(), self.where.webhook_path.encode()):
                return _answer(start_response, 404, {"message": "not found"})
            if method != "POST":
                return _answer(start_response, 405, {"message": "POST only"}, [("Allow", "POST")])
            status_code, body = self._notification(environ)
            return _answer(start_response, status_code, body)
        if console.handles(path):
            return self.console(environ, start_response)
        if path == STATUS_PATH:  # the verdict is the console's to show, to whom it shows it
            refused = console.refusal(self.where.console, environ, start_response)
            if refused is not None:
                return refused
        if path in ("/healthz", STATUS_PATH, "/metrics") and method not in ("GET", "HEAD"):
            return _answer(start_response, 405, {"message": "GET only"}, [("Allow", "GET")])
        if path == "/healthz":
            up = self.liveness.up()
            return _answer(start_response, 200 if up else 503, {"status": "up" if up else "down"})
        if path == STATUS_PATH:
            return self.status_page(environ, start_response)
        if path == "/metrics":
            return self.metrics_page(environ, start_response)
        return _answer(start_response, 404, {"message": "not found"})

    def _status(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        return _answer(start_response, *self._verdict())

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        text = metrics.exposition(
            metrics.LiveCollector(self.engine, self.limits), self.metrics.registry
        ).encode()
        length = str(len(text))
        headers = [("Content-Type", "text/plain; version=0.0.4"), ("Content-Length", length)]
        start_response("200 OK", headers)
        return [text]

    def _notification(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status_code, body = _parse_notification(environ, self.api_url)
        outcome = {200: "ping", 202: "accepted", 413: "too_large"}.get(status_code, "refused")
        self.metrics.received.labels(outcome).inc()
        if status_code == 202:
            self.notifications.add(body["dispatch_id"])
            log.debug("webhook: dispatch %s notified", body["dispatch_id"])
        elif status_code >= 400:
            log.warning("webhook refused (HTTP %s): %s", status_code, body["message"])
        return status_code, body

    def _verdict(self) -> tuple[int, dict[str, Any]]:
        try:
            result = self.limits.check(self.engine)
        except EtlError as error:
            return 503, {"code": status.Health.CRITICAL, "problems": [f"CRITICAL: {error}"]}
        return (503 if result.code >= status.Health.CRITICAL else 200), result.as_json()


class AtOnce:
    """At most `most` requests at once in the applications it wraps, together; another is
    answered 503 at once, with Retry-After, rather than wait for a thread."""

    def __init__(self, most: int) -> None:
        self.free = threading.BoundedSemaphore(most)

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def drawn(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            if not self.free.acquire(blocking=False):
                busy = b"busy drawing other pages: ask again in a second\n"
                headers = [("Content-Type", "text/plain; charset=utf-8")]
                headers += [("Content-Length", str(len(busy))), ("Retry-After", str(RETRY_SECONDS))]
                start_response("503 Service Unavailable", headers)
                return [busy]
            try:  # each answers a list: the page is drawn when it returns
                return app(environ, start_response)
            finally:
                self.free.release()

        return drawn


class HeadersOnly:
    """HEAD: the answer a GET would have, its Content-Length included, without its body. waitress
    sends whatever body the application gives, even to HEAD, and a client keeping its connection
    alive read that body as the start of the next answer."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "HEAD":
            return self.app(environ, start_response)
        answered: list[tuple[str, list[tuple[str, str]]]] = []
        written: list[bytes] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answered[:] = [(status, headers)]
            return written.append

        body = self.app(environ, keep)
        try:
            length = sum(len(chunk) for chunk in [*written, *body])
        finally:
            if hasattr(body, "close"):
                body.close()
        status, headers = answered[0]
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(length))]
        start_response(status, headers)
        return []


def _parse_notification(environ: dict[str, Any], api_url: str) -> tuple[int, dict[str, Any]]:
    """What to answer, and for a notification to act on, the dispatch id it names."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0:
        return 400, {"message": "bad Content-Length"}
    if length > MAX_BODY:
        return 413, {"message": f"a notification is at most {MAX_BODY} bytes"}
    try:
        notification = json.loads(environ["wsgi.input"].read(length))
    except (ValueError, RecursionError):
        return 400, {"message": "the body is not JSON"}
    if not isinstance(notification, dict) or not isinstance(notification.get("event"), dict):
        return 400, {"message": 'expected {"event": {"name": ...}, "resource": ...}'}
    name, resource = notification["event"].get("name"), notification.get("resource")
    if name == "" and resource == "":
        return 200, {"message": "pong"}  # Voltus checking that the listener is alive
    if name not in WEBHOOK_EVENTS:
        return 422, {"message": f"event name not one of {', '.join(WEBHOOK_EVENTS)}"}
    dispatch_id = dispatch_named(resource, api_url) if isinstance(resource, str) else None
    if dispatch_id is None:
        shown = logs.one_line(repr(resource)[:200])
        return 422, {
            "message": "resource is not /<version>/dispatches/<id> on the configured API: "
            + redact_url(shown)
        }
    return 202, {"message": "accepted", "dispatch_id": dispatch_id}


def dispatch_named(resource: str, api_url: str) -> str | None:
    """The dispatch a notification's resource names: a path `/<version>/dispatches/<id>`, or an
    absolute URL of that path on the configured API's own origin (scheme, host and port) and
    under its path. Another host is never asked anything."""
    path = resource
    if not resource.startswith("/"):
        try:
            given, api = urlsplit(resource), urlsplit(api_url)
            origins = [
                (url.scheme, url.hostname, url.port or DEFAULT_PORTS.get(url.scheme))
                for url in (given, api)
            ]
        except ValueError:  # a port that is not a number
            return None
        prefix = api.path.rstrip("/")
        if origins[0] != origins[1] or given.username or given.password:
            return None
        if given.query or given.fragment or not given.path.startswith(prefix + "/"):
            return None
        path = given.path.removeprefix(prefix)
    match = DISPATCH_RESOURCE.fullmatch(path)
    return match.group(1) if match else None


def _answer(
    start_response: StartResponse,
    status_code: int,
    body: dict[str, Any],
    extra_headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    reasons = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}
    reasons |= {401: "Unauthorized", 403: "Forbidden"}
    reasons |= {405: "Method Not Allowed", 413: "Content Too Large", 422: "Unprocessable Content"}
    reasons |= {503: "Service Unavailable"}
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    start_response(f"{status_code} {reasons[status_code]}", headers + (extra_headers or []))
    return [data]


def _push(
    parts: runner.Parts,
    handler: TimedHandler,
    notifications: Notifications,
    heartbeat: Heartbeat,
) -> Iterator[runner.RunEvent]:
    """Look up what was notified, then act on what is due, until `stop` is set."""
    engine, client, settings, stop = parts.engine, parts.client, parts.settings, parts.stop
    assert client is not None, "a lookup needs the API"
    worker = processor.worker_id()
    while not stop.is_set():
        heartbeat.beat()  # waiting for notifications is turning too
        notified = notifications.take(timeout=0.5)
        if not notified:
            continue
        handler.expect(notified)
        try:
            if len(notified) > MOST_LOOKUPS:
                yield dispatches.fetch(engine, client)
            else:
                for dispatch_id in sorted(notified):
                    yield dispatches.fetch_dispatch(engine, client, dispatch_id)
            yield processor.process(engine, handler, settings, stop, worker)
        except EtlError as error:
            yield error
        finally:
            handler.forget(notified)


def _quiet_server_logs() -> None:
    """waitress's own lines in etl's format; its queue depth, which a burst of notifications
    raises for a moment, only when it is an error."""
    server_log = logging.getLogger("waitress")
    server_log.handlers[:] = log.handlers
    server_log.propagate = False
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class _RequestDeadline(HTTPChannel):
    """waitress's connection, whose request must arrive whole within REQUEST_SECONDS of its
    first byte. waitress closes a connection idle for its channel_timeout, idle being "nothing
    received since": a request still on its way counts as idle since it began, so that a client
    trickling a byte every few seconds is closed as surely as a silent one."""

    began = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None:  # the first bytes of a new request
            self.began = time.time()
        taken = bool(super().received(data))
        if self.request is not None:  # not whole yet
            self.last_activity = self.began
        return taken


class Listening:
    """The listener's thread. Its loop returns when etl closes its sockets at the stop; ended any
    other way (an error, waitress's own exit), it stops the whole process, which then exits
    non-zero: polling on behind a dead listener would leave webhooks, /healthz and the console
    dead while a supervisor sees a process alive and never restarts it."""

    def __init__(self, server: Any, sockets: dict[int, Any], stop: threading.Event) -> None:
        self.server, self.sockets, self.stop = server, sockets, stop
        self.died: str | None = None  # why it ended before the stop
        self.thread = threading.Thread(target=self._run, name="etl-listen", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as error:  # whatever ends the loop ends the service
            if self.stop.is_set():  # closing its sockets at the stop: no death
                log.debug("the listener stopped on %r while closing", error)
                return
            self.died = f"{type(error).__name__}: {error}"
            log.exception("the listener stopped: %s", self.died)
        else:
            if self.stop.is_set():
                return
            self.died = "its loop ended"
            log.error("the listener stopped: %s", self.died)
        self.stop.set()

    def close(self) -> None:
        """Close every socket from the listener's own thread, woken through its trigger: its
        loop then finds nothing left to wait on and returns. (Closed from another thread, a
        socket that the loop is waiting on fails there with EBADF, a traceback on a clean
        shutdown.) Raises if the listener had died."""

        def close_all() -> None:
            for dispatcher in list(self.sockets.values()):
                dispatcher.close()

        try:
            self.server.trigger.pull_trigger(close_all)
        except OSError:  # its wake-up pipe is closed already (seen, rarely, in tests)
            close_all()  # from here, then: poll() reports a socket closed under it, no error
        self.thread.join(timeout=5)
        if self.died is not None:  # no loop ran close_all: nothing else holds the sockets now
            close_all()
        self.server.task_dispatcher.shutdown()
        if self.died is not None:
            raise EtlError(f"the listener stopped ({self.died}): restart etl")


def _connection_limit() -> int:
    """As many connections as this process may open files, less room for the database's and
    the API's (waitress's default, 100, was filled by 100 slow clients)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(100, min(10_000, soft - 100))


def _server(app: Callable[..., Iterable[bytes]], where: Listener, sockets: dict[int, Any]) -> Any:
    try:
        server = create_server(
            HeadersOnly(app),
            map=sockets,
            host=where.host,
            port=where.port,
            # larger than a notification may be, so that etl answers (and counts) the 413
            max_request_body_size=BODY_READ_LIMIT,
            threads=THREADS,
            connection_limit=_connection_limit(),
            # poll(), not select(): select() fails at a descriptor numbered 1024 or more, which
            # a process allowed more files reaches with a thousand connections
            asyncore_use_poll=True,
            channel_timeout=REQUEST_SECONDS,
            cleanup_interval=1,
        )
    except OSError as error:
        raise ConfigError(f"cannot listen on {where.host}:{where.port}: {error.strerror}") from None
    assert isinstance(server, BaseWSGIServer), "one address, one server"
    server.channel_class = _RequestDeadline
    return server


def serve_console(
    engine: Engine, where: Listener, limits: status.Limits, stop: threading.Event
) -> None:
    """`etl console`: the console alone (no webhook, no poll) until `stop` is set."""
    _quiet_server_logs()
    sockets: dict[int, Any] = {}
    app = AtOnce(DRAWN_AT_ONCE).wrap(console.ConsoleApp(engine, where.console, limits))
    server = _server(app, where, sockets)
    listening = Listening(server, sockets, stop)
    listening.thread.start()
    log.info("console on http://%s:%s%s", where.host, server.effective_port, console.CONSOLE_PATH)
    stop.wait()
    listening.close()


def serve(
    parts: runner.Parts,
    every: float,
    where: Listener,
    limits: status.Limits,
    report: Callable[[runner.RunEvent], None],
) -> None:
    """Listen and poll until `stop` is set; each fetch's and pass's summary, and each error
    lived through, goes to `report`. The work in hand finishes before it returns."""
    _quiet_server_logs()
    notifications, server_metrics = Notifications(), ServerMetrics()
    bound = _turn_bound(every, parts.settings)
    handled = Heartbeat("handler", bound)
    timed = TimedHandler(parts.handler, server_metrics.to_handler, handled)
    # every handler call, pushed or polled, is timed for /metrics
    parts = replace(parts, handler=timed)
    stop = parts.stop
    assert parts.client is not None, "etl serve looks dispatches up in the API"
    api_url = parts.client.settings.url
    poll_turns, push_turns = Heartbeat("poll", bound), Heartbeat("webhook", bound)
    liveness = Liveness(parts.engine, (poll_turns, push_turns), handled)
    app = WebhookApp(parts.engine, where, notifications, server_metrics, limits, api_url, liveness)
    sockets: dict[int, Any] = {}  # the listener's, its connections' and its wake-up pipe's
    server = _server(app, where, sockets)
    listening = Listening(server, sockets, stop)
    crashed: list[BaseException] = []

    def push() -> None:
        try:
            for event in _push(parts, timed, notifications, push_turns):
                report(event)
        except Exception as error:  # a bug: stop the service, so that its supervisor restarts it
            log.exception("the webhook worker stopped: %s", error)
            crashed.append(error)
            stop.set()

    pushing = threading.Thread(target=push, name="etl-push")
    listening.thread.start()
    pushing.start()
    shown_path = f"{WEBHOOK_PATH}/***" if where.token else WEBHOOK_PATH
    console_shown = "off"
    if where.console.enabled:
        gate = "password" if where.console.password else "loopback only"
        console_shown = f"{console.CONSOLE_PATH} and {STATUS_PATH} ({gate})"
    log.info(
        "listening on http://%s:%s: webhook %s, console %s, /healthz, /metrics",
        where.host, server.effective_port, shown_path, console_shown,
    )  # fmt: skip
    try:
        for event in runner.run_loop(parts, every):
            poll_turns.beat()  # each fetch, pass and error it lived through: the loop turns
            report(event)
    finally:
        stop.set()
        pushing.join()
        listening.close()
    if crashed:
        raise EtlError("the webhook worker stopped on an unexpected error (logged above)")
    log.info("stopped")
