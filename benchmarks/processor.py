"""Processor figures: the planning pass against years of history, and the time from a large
dispatch's start to its last site's handler call."""

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from benchmarks.databases import fresh_database
from benchmarks.fleet import fleet_dispatch
from benchmarks.history import fill_history
from etl.act import planner
from etl.act.builtin_handlers import ActionRequest
from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.timeutil import format_rfc3339, utcnow
from etl.ingest import dispatches
from etl.jobs import runner
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient

PLAN_RUNS = 30
_PROGRAM = {"id": 1, "name": "P", "timezone": "UTC", "market": "", "program_type": "capacity"}

# the planner's lookups, by hand: the floor its SQLAlchemy version is measured against
PAIR = (
    "d.id, ds.site_id, d.authorized, d.test, d.start_time, d.end_time, ds.removed_at,"
    " ds.holding, ds.episode FROM dispatch_sites ds JOIN dispatches d ON d.id = ds.dispatch_id"
)
EPISODE_OVER = "(ds.holding IS NULL OR ds.holding <> 'held' OR ds.episode <> a.episode)"
WITH_PAIR = (
    "actions a JOIN dispatch_sites ds ON ds.dispatch_id = a.dispatch_id AND ds.site_id = a.site_id"
)
RAW_PLAN = {
    "sqlite": [
        f"SELECT {PAIR} WHERE d.id IN (SELECT dispatch_id FROM dispatch_sites"
        " WHERE holding IS NOT NULL UNION SELECT id FROM dispatches WHERE authorized = 1"
        " AND end_time IS NULL UNION SELECT id FROM dispatches WHERE authorized = 1"
        " AND end_time > :since UNION SELECT id FROM dispatches WHERE updated_at > :since)",
        "SELECT started_at FROM fetch_runs WHERE outcome = 'succeeded' ORDER BY id LIMIT 1",
        f"SELECT a.id FROM {WITH_PAIR} WHERE a.finished_at IS NULL AND a.kind = 'curtail'"
        f" AND a.state IN ('pending', 'retrying') AND {EPISODE_OVER}",
        f"SELECT a.id FROM {WITH_PAIR} WHERE a.finished_at IS NULL AND a.kind = 'restore'"
        f" AND a.state = 'waiting' AND {EPISODE_OVER}",
        "SELECT id FROM actions WHERE finished_at IS NULL AND kind = 'restore'"
        " AND state IN ('pending', 'retrying')",
    ]
}
RAW_PLAN["postgresql"] = [q.replace("= 1", "= true") for q in RAW_PLAN["sqlite"]]


def _median_ms(run: Callable[[], object], runs: int = PLAN_RUNS) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def planning(backend: str, history: int) -> dict[str, float]:
    """Median milliseconds of a planning pass (after the store's first) over `history` past
    dispatches, and of its raw-SQL floor."""
    with fresh_database(backend) as engine:
        fill_history(engine, history)
        settings = ProcessorSettings()
        planner.plan(engine, settings)  # the first plan of a store looks back 7 days
        plan_ms = _median_ms(lambda: planner.plan(engine, settings))
        floor_ms = _median_ms(lambda: _raw_plan(engine))
    return {"plan_ms": plan_ms, "floor_ms": floor_ms}


def _raw_plan(engine: Engine) -> None:
    now = utcnow()
    since = now - timedelta(minutes=5)
    with engine.begin() as conn:
        for query in RAW_PLAN[engine.dialect.name]:
            times = {"now": now, "since": since}
            params: dict[str, datetime] | dict[str, str] = times
            if engine.dialect.name == "sqlite":  # as etl stores them there: naive UTC text
                params = {k: v.replace(tzinfo=None).isoformat(" ") for k, v in times.items()}
            conn.execute(text(query), params).all()


class SlowHandler:
    """Takes `seconds` per call, like a site controller answering; notes when each call ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.finished: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, request: ActionRequest) -> str:
        time.sleep(self.seconds)
        with self._lock:
            self.finished.append(time.time())
        return "ok"


def curtail_latency(
    backend: str, sites: int = 500, handler_seconds: float = 0.2
) -> dict[str, float]:
    """Seconds from a dispatch's start_time to the end of its last site's handler call, with
    `etl run --every` already running (in this process) when the dispatch starts."""
    settings = ProcessorSettings()
    handler = SlowHandler(handler_seconds)
    with fresh_database(backend) as engine, Sandbox() as sandbox:
        start = utcnow() + timedelta(seconds=3)
        sandbox.dispatches = [fleet_dispatch(sites, start)]
        client = VoltusClient(ApiSettings(sandbox.url, sandbox.key))
        dispatches.fetch(engine, client)  # known in advance, as Voltus announces dispatches
        stop = threading.Event()
        loop = threading.Thread(
            target=lambda: list(
                runner.run_loop(runner.Parts(engine, handler, settings, client, stop), 600)
            )
        )
        loop.start()
        deadline = time.monotonic() + 60
        while len(handler.finished) < sites and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        loop.join()
    rounds = -(-sites // settings.workers)
    return {
        "latency_s": max(handler.finished) - start.timestamp(),
        "floor_s": rounds * handler_seconds,  # the pool's bound: calls in rounds of `workers`
        "workers": settings.workers,
        "calls": len(handler.finished),
    }


def actions_per_second(processes: int, actions: int = 2000) -> dict[str, float]:
    """Due actions run per second by `processes` concurrent `etl process` on PostgreSQL, with
    the log handler writing to /dev/null (as near to no handler as a real one gets)."""
    with fresh_database("postgresql") as engine, Sandbox() as sandbox:
        sites_per_dispatch = 10
        start = utcnow() - timedelta(minutes=1)
        sandbox.dispatches = [
            {
                "id": f"d{i}",
                "authorized": True,
                "test": False,
                "start_time": format_rfc3339(start),
                "end_time": format_rfc3339(start + timedelta(hours=1)),
                "program": _PROGRAM,
                "sites": [
                    {"id": f"s{i}-{j}", "name": "", "customer_location_id": "", "commitment": 1}
                    for j in range(sites_per_dispatch)
                ],
            }
            for i in range(actions // sites_per_dispatch)
        ]
        dispatches.fetch(engine, VoltusClient(ApiSettings(sandbox.url, sandbox.key)))
        planner.plan(engine, ProcessorSettings())
        url = engine.url.render_as_string(hide_password=False)
        # the API the store was fetched from: a store serves one (etl/binding.py)
        env = {**os.environ, "ETL_DATABASE_URL": url, "VOLTUS_API_URL": sandbox.url}
        command = [str(Path(sys.executable).parent / "etl"), "process", "-q"]
        started = time.perf_counter()
        runs = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(processes)
        ]
        codes = [run.wait() for run in runs]
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            done = conn.execute(
                text("SELECT count(*) FROM actions WHERE kind = 'curtail' AND state = 'succeeded'")
            ).scalar_one()
    assert codes == [0] * processes and done == actions, (codes, done)
    return {"actions_per_s": actions / elapsed, "seconds": elapsed}
