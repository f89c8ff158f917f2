"""The push path: a whole `etl serve` process, polling every 600 s so that only a webhook can
explain its speed, the emulator as the API, and a webhook handler (ETL_ACTION_WEBHOOK) on
loopback that notes when each action reaches it.

Latency: from sending a notification for a dispatch active at once to its handler call. Burst:
the API requests that 100 notifications at once lead to."""

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from benchmarks.databases import scratch_url
from etl.base.timeutil import format_rfc3339, utcnow
from etl.sandbox.emulator import Sandbox

ETL = str(Path(sys.executable).parent / "etl")


class Receiver:
    """The handler's end: each action POSTed to it, with when it arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # dispatch id: first arrival
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.perf_counter()
                dispatch_id = json.loads(body)["dispatch_id"]
                receiver.arrivals.setdefault(dispatch_id, arrived)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/action"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _dispatch(dispatch_id: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": dispatch_id,
        "authorized": True,
        "test": False,
        "start_time": format_rfc3339(now),
        "end_time": format_rfc3339(now.replace(hour=23, minute=59)),
        "program": {
            "id": 1,
            "name": "bench",
            "timezone": "UTC",
            "market": "",
            "program_type": "capacity",
        },
        "sites": [{"id": f"site-{dispatch_id}", "name": "s", "customer_location_id": ""}],
    }


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the push path did not answer in time")
        time.sleep(0.002)


def notify(url: str, dispatch_id: str) -> None:
    resource = f"/2022-04-15/dispatches/{dispatch_id}"
    body = {"event": {"name": "dispatch.create"}, "resource": resource}
    requests.post(url, json=body, timeout=5).raise_for_status()


def _notify_all(url: str, dispatch_ids: list[str]) -> None:
    for dispatch_id in dispatch_ids:
        notify(url, dispatch_id)


def measure(backend: str, notifications: int = 60) -> dict[str, float]:
    """p50 and p95 seconds from notification to handler call, and API requests per burst."""
    with Sandbox() as sandbox, scratch_url(backend) as database_url:
        sandbox.dispatches = []
        receiver = Receiver()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {
            **os.environ,
            "ETL_DATABASE_URL": database_url,
            "VOLTUS_API_URL": sandbox.url,
            "VOLTUS_API_KEY": sandbox.key,
            "ETL_ACTION_WEBHOOK": receiver.url,
        }
        subprocess.run([ETL, "db", "upgrade"], env=env, check=True, capture_output=True)
        listen = f"127.0.0.1:{port}"
        command = [ETL, "serve", "--every", "600", "--listen", listen, "-q"]
        service = subprocess.Popen(command, env=env)
        webhook = f"http://{listen}/voltus/webhook"
        try:
            wait_until(lambda: answers(f"http://{listen}/healthz"))
            latencies = []
            for i in range(notifications):
                dispatch_id = f"lat{i}"
                sandbox.dispatches = [*sandbox.dispatches, _dispatch(dispatch_id)]
                sent = time.perf_counter()
                notify(webhook, dispatch_id)
                wait_until(lambda: dispatch_id in receiver.arrivals)  # noqa: B023 (awaited here)
                latencies.append(receiver.arrivals[dispatch_id] - sent)
            one = _burst(sandbox, receiver, webhook, ["burst-one"] * 100)
            many = _burst(sandbox, receiver, webhook, [f"burst{i}" for i in range(100)])
        finally:
            service.terminate()
            service.wait(timeout=30)
            receiver.server.shutdown()
    cut = statistics.quantiles(latencies, n=20)
    return {
        "p50": statistics.median(latencies),
        "p95": cut[18],
        "count": len(latencies),
        "burst_one": one,
        "burst_many": many,
    }


def _burst(sandbox: Sandbox, receiver: Receiver, webhook: str, ids: list[str]) -> float:
    """API requests that notifications for `ids`, sent at once from 10 threads, lead to."""
    distinct = sorted(set(ids))
    sandbox.dispatches = [*sandbox.dispatches, *(_dispatch(d) for d in distinct)]
    before = len(sandbox.requests)
    chunks = [ids[i::10] for i in range(10)]
    threads = [threading.Thread(target=_notify_all, args=(webhook, chunk)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: all(d in receiver.arrivals for d in distinct))
    time.sleep(1)  # anything still to come
    return len(sandbox.requests) - before


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code in (200, 503)
    except requests.ConnectionError:
        return False
