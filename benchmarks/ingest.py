"""Ingestion figures: etl against the raw floor (benchmarks/floor.py) on the same synthetic API,
in the same run: first load, reload of unchanged data, reload with 1% of dispatches modified,
peak memory, and the whole minutely process."""

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from benchmarks import floor, same_schema
from benchmarks.databases import fresh_database, scratch_url
from etl.base.config import ApiSettings
from etl.ingest import dispatches
from etl.source.api import VoltusClient

SITES, PROGRAMS, SITES_PER_DISPATCH = 500, 20, 4
REPO = Path(__file__).parents[1]


def synthetic(count: int, modified: float = 0.0) -> list[dict[str, Any]]:
    """`count` dispatches of 4 sites over 500 sites and 20 programs, shaped as the API sends
    them (nanosecond times); a `modified` fraction has its end time moved."""
    base = datetime(2026, 11, 26, tzinfo=UTC)
    step = max(1, round(1 / modified)) if modified else 0
    dispatches = []
    for i in range(count):
        start = base - timedelta(seconds=i * 7)
        end = start + timedelta(hours=1, minutes=15 if step and i % step == 0 else 0)
        program = i % PROGRAMS
        dispatches.append(
            {
                "id": f"d{i:06d}",
                "authorized": i % 50 != 0,
                "test": i % 97 == 0,
                "start_time": start.strftime("%Y-%m-%dT%H:%M:%S.123456789Z"),
                "end_time": end.strftime("%Y-%m-%dT%H:%M:%S.987654321Z"),
                "creation_time": (start - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "modification_number": 0,
                "metadata": {"dispatch_source": "synthetic"},
                "program": {
                    "id": 1000 + program,
                    "name": f"Program {program}",
                    "timezone": "US/Central",
                    "market": "MISO",
                    "program_type": "capacity",
                },
                "sites": [
                    {
                        "id": f"s{(i * SITES_PER_DISPATCH + j) % SITES}",
                        "name": f"Site {(i * SITES_PER_DISPATCH + j) % SITES}",
                        "customer_location_id": f"loc{j}",
                        "commitment": 10.0 + j,
                        "drop_by": 10.0 + j,
                    }
                    for j in range(SITES_PER_DISPATCH)
                ],
            }
        )
    return dispatches


class Api:
    """A loopback server answering GET /2022-04-15/dispatches with a body encoded once, so that
    neither side pays for the server's JSON encoding."""

    def __init__(self) -> None:
        self.body = b'{"dispatches": [], "page": 0, "perPage": 0}'
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = api.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, dispatches: list[dict[str, Any]]) -> None:
        self.body = json.dumps({"dispatches": dispatches, "page": 0, "perPage": 0}).encode()


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _timed_command(command: list[str], env: dict[str, str], quiet: bool = False) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL if quiet else None)
    return time.perf_counter() - started


def _peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _floor_run(api: Api, database: str) -> None:
    floor.load(database, floor.fetch(api.url, "secret"))


def _etl_run(engine: Engine, client: VoltusClient) -> None:
    dispatches.fetch(engine, client)


def compare(backend: str, count: int, runs: int) -> dict[str, float]:
    """Medians of `runs`: seconds for each case, floor and etl, and peak traced bytes."""
    api = Api()
    client = VoltusClient(ApiSettings(api.url, "secret"))
    same, modified = synthetic(count), synthetic(count, modified=0.01)
    cases: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        cases.setdefault(name, []).append(value)

    for _ in range(runs):
        api.serve(same)
        with scratch_url(backend) as database:
            note("floor_first", _timed(lambda: _floor_run(api, database)))
            note("floor_reload", _timed(lambda: _floor_run(api, database)))
            api.serve(modified)
            note("floor_modified", _timed(lambda: _floor_run(api, database)))
        api.serve(same)
        with fresh_database(backend) as engine:
            note("etl_first", _timed(lambda: _etl_run(engine, client)))
            written = same_schema.written_rows(engine.url.render_as_string(hide_password=False))
            note("etl_reload", _timed(lambda: _etl_run(engine, client)))
            api.serve(modified)
            note("etl_modified", _timed(lambda: _etl_run(engine, client)))
        api.serve(same)
        note("same_first", same_schema.floor_seconds(backend, api.url, written))
    api.serve(same)
    with scratch_url(backend) as database:
        note("floor_peak", _peak_bytes(lambda: _floor_run(api, database)))
    with fresh_database(backend) as engine:
        note("etl_peak", _peak_bytes(lambda: _etl_run(engine, client)))
    api.server.shutdown()
    return {name: statistics.median(values) for name, values in cases.items()}


# What a minutely `etl run` loads before its work, step by step: each line a whole process,
# so that the differences between them say where the time goes
COLD_START_STEPS = {
    "interpreter": "pass",
    "sqlalchemy": "import sqlalchemy",
    "libraries": "import sqlalchemy, requests, typer",
    "etl_modules": "import etl.cli, etl.ingest.dispatches, etl.act.processor",
}


def cron_process(runs: int = 7) -> dict[str, float]:
    """Whole-process seconds: `etl run` with 200 unchanged dispatches (stored, none due) against
    `python benchmarks/floor.py` loading 1,000; `etl --help`; and the COLD_START_STEPS."""
    # compiled as pip compiles an installed package: without it, a machine that sets
    # PYTHONDONTWRITEBYTECODE would measure etl compiling its own source on every run
    compileall.compile_dir(REPO / "etl", quiet=1)
    api = Api()
    results: dict[str, list[float]] = {"etl": [], "floor": [], "help": []}
    results |= {step: [] for step in COLD_START_STEPS}
    with tempfile.TemporaryDirectory() as folder:
        etl_db, floor_db = f"sqlite:///{folder}/etl.db", f"sqlite:///{folder}/floor.db"
        env = {
            **os.environ,
            "ETL_DATABASE_URL": etl_db,
            "VOLTUS_API_URL": api.url,
            "VOLTUS_API_KEY": "secret",
        }
        etl = [str(Path(sys.executable).parent / "etl")]
        subprocess.run([*etl, "db", "upgrade"], env=env, check=True, capture_output=True)
        api.serve(synthetic(200))
        subprocess.run([*etl, "run", "-q"], env=env, check=True, capture_output=True)
        floor_command = [sys.executable, str(REPO / "benchmarks" / "floor.py"), api.url, floor_db]
        for _ in range(runs):
            api.serve(synthetic(200))
            results["etl"].append(_timed_command([*etl, "run", "-q"], env))
            api.serve(synthetic(1000))
            results["floor"].append(_timed_command(floor_command, dict(os.environ)))
            results["help"].append(_timed_command([*etl, "--help"], env, quiet=True))
            for step, code in COLD_START_STEPS.items():
                results[step].append(_timed_command([sys.executable, "-c", code], env))
    api.server.shutdown()
    return {name: statistics.median(values) for name, values in results.items()}
