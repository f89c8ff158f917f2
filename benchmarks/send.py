"""Telemetry sent to Voltus: readings per second through the outbox (`etl telemetry send`'s
library calls: checked, queued, then sent in batches of 2,048 and marked sent) into the
emulator, against a floor measured in the same run: the same readings POSTed in the same
batches by hand (stdlib urllib and json), with no check, no store and no mark."""

import json
import statistics
import time
import urllib.request
from datetime import UTC, datetime, timedelta

from benchmarks.databases import fresh_database
from etl.act import send_telemetry
from etl.base.config import ApiSettings
from etl.base.timeutil import format_rfc3339
from etl.ingest import dispatches, readings
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient

METERS = 20


def _lines(count: int) -> list[str]:
    """`count` readings of 20 one-meter sites, 30 s apart, ending an hour ago."""
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    last -= timedelta(seconds=int(last.timestamp()) % 30)
    per_meter = count // METERS
    return ["site_id,timestamp,kw\n"] + [
        f"s{m},{format_rfc3339(last - timedelta(seconds=30 * i))},{i % 50}.5\n"
        for m in range(METERS)
        for i in range(per_meter)
    ]


def _floor(sandbox: Sandbox, lines: list[str]) -> None:
    points = []
    for line in lines[1:]:
        site_id, timestamp, kw = line.strip().split(",")
        points.append(
            {"site_id": site_id, "timestamp": timestamp, "interval_seconds": 30,
             "units": "kW", "value": float(kw)}
        )  # fmt: skip
    for start in range(0, len(points), send_telemetry.MOST_POINTS):
        body = json.dumps({"telemetry": points[start : start + send_telemetry.MOST_POINTS]})
        request = urllib.request.Request(
            f"{sandbox.url}/2022-04-15/telemetry",
            data=body.encode(),
            method="POST",
            headers={"X-Voltus-API-Key": sandbox.key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as answer:
            answer.read()


def measure(backend: str, count: int, runs: int = 3) -> dict[str, float]:
    """Medians of `runs`: readings per second, etl and floor."""
    lines = _lines(count)
    etl_rates, floor_rates = [], []
    for _ in range(runs):
        with Sandbox() as sandbox, fresh_database(backend) as engine:
            sandbox.dispatches = []
            sandbox.sites = [
                {"id": f"s{m}", "name": f"Site {m}", "customer_location_id": "",
                 "meters": [{"id": f"s{m}-m", "name": "Main", "asset_type": "load"}]}
                for m in range(METERS)
            ]  # fmt: skip
            client = VoltusClient(ApiSettings(sandbox.url, sandbox.key))
            dispatches.fetch(engine, client, include_sites=True)
            started = time.perf_counter()
            _floor(sandbox, lines)
            floor_rates.append(count / (time.perf_counter() - started))
            sandbox.received.clear()
            started = time.perf_counter()
            readings.queue_lines(engine, lines, "bench")
            sent = send_telemetry.drain(engine, client)
            etl_rates.append(count / (time.perf_counter() - started))
            assert sent.sent == count and len(sandbox.received) == count
    return {"etl": statistics.median(etl_rates), "floor": statistics.median(floor_rates)}
