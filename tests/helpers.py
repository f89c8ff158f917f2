"""Builders for API-shaped dispatches, so that each test states only what it varies."""

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from etl.base.timeutil import format_rfc3339
from etl.handlers import ActionKind, ActionRequest

# default dispatch times are fixed for the session, so that a test's repeated fetches of the
# "same" dispatch see the same one; `at()` is for times that must be fresh
SESSION_START = datetime.now(UTC)


def at(minutes: float) -> str:
    """An API time this many minutes from now."""
    return format_rfc3339(datetime.now(UTC) + timedelta(minutes=minutes))


def site(site_id: str, commitment: float | None = 10.0, name: str | None = None) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": name or f"Site {site_id}",
        "customer_location_id": f"loc-{site_id}",
        "commitment": commitment,
    }


def dispatch(dispatch_id: str, *sites: dict[str, Any], **fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": dispatch_id,
        "authorized": True,
        "test": False,
        "start_time": format_rfc3339(SESSION_START - timedelta(minutes=5)),
        "end_time": format_rfc3339(SESSION_START + timedelta(minutes=55)),
        "program": {
            "id": 42,
            "name": "MISO - Operating Reserves",
            "timezone": "US/Central",
            "market": "MISO",
            "program_type": "ancillary_services",
        },
        "sites": list(sites) or [site("s1")],
    }
    value.update(fields)
    return {k: v for k, v in value.items() if v is not None}


LOG_LINE = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)"
)


def log_messages(stderr: str, level: str | None = None) -> list[str]:
    """The messages of etl's text log lines on stderr (at `level`, or all); every line must have
    the shape `2026-11-27T06:49:42.123Z LEVEL message`."""
    messages = []
    for line in stderr.splitlines():
        match = LOG_LINE.fullmatch(line)
        assert match, f"not a log line: {line!r}"
        if level is None or match.group(2) == level:
            messages.append(match.group(3))
    return messages


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# how long a server a test starts may take to answer: its first request imports and queries,
# which took more than a second on a busy machine
STARTING_SECONDS = 60


def wait_listening(url: str) -> None:
    """Wait until `url` answers a GET, whatever its status. A refused connection (not listening
    yet) or a slow answer is asked again, until STARTING_SECONDS have passed."""

    def answers() -> bool:
        try:
            requests.get(url, timeout=5)
        except (requests.ConnectionError, requests.Timeout):
            return False
        return True

    wait_for(answers, STARTING_SECONDS)


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A receiver on a free loopback port, serving in a thread for the duration: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def receive_posts(status: int, received: list[bytes]) -> type[BaseHTTPRequestHandler]:
    """A receiver (for http_server) that answers every POST with this status, keeping each body
    in `received`: a webhook listener."""

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Receiver


def serve_body(body: bytes) -> type[BaseHTTPRequestHandler]:
    """A receiver (for http_server) that answers every GET with this body."""

    class Fixed(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Fixed


# a curtail's request as a handler receives it
REQUEST = ActionRequest(
    action=ActionKind.CURTAIL,
    dispatch_id="d1",
    site_id="s1",
    site_name="Site 1",
    customer_location_id="1",
    commitment_kw=12.0,
    idempotency_key="k",
    test=False,
    start_time=datetime(2024, 2, 2, 9, tzinfo=UTC),
    end_time=None,
    program_id=42,
    program_name="P",
    attempt=1,
)
