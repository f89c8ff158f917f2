"""Fleet fan-out (issue 31): one dispatch of 5,000 sites, first seen at its start.

- `fan_out`: from the fetch that first sees the dispatch to its last curtail recorded done, in
  one process as `etl run` does it (a pass plans, claims, calls the handler, records), with the
  `log` handler (printing to /dev/null) or a command handler; the command's floor is the same
  command spawned as many times by a bare thread pool of the same size.
- `processes`: the same pass shared by N whole `etl process` at once on one PostgreSQL store,
  with no action run twice.
- `push`: a whole `etl serve` (polling every 600 s) told of the dispatch by a webhook: from the
  notification to its first and its last curtail recorded done.
- `telemetry`: the fleet's readings, one a site every 30 s, queued and sent through the outbox a
  minute at a time as `etl telemetry send` and `etl run` do, for `minutes` of readings (played
  as fast as they go): etl's own CPU time for them (its thread's: the emulator that takes them
  runs in threads of its own, a PostgreSQL server in its own process) over the time they span.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from benchmarks import push as push_path
from benchmarks.databases import fresh_database, scratch_url
from etl.act import planner, processor, send_telemetry
from etl.act.builtin_handlers import CommandHandler, LogHandler, _dying_with_us
from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.timeutil import format_rfc3339, utcnow
from etl.handlers import Handler
from etl.ingest import dispatches, readings
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient

SITES = 5_000
COMMAND = "/bin/true"
ETL = str(Path(sys.executable).parent / "etl")


def fleet_dispatch(sites: int, start: datetime | None = None) -> dict[str, Any]:
    """A dispatch of `sites` sites that starts now (or at `start`) and lasts an hour; each
    site's entry has a field etl does not model (`drop_by`), passed on to its handler, as
    Voltus's records do."""
    start = start or utcnow()
    return {
        "id": "fleet",
        "authorized": True,
        "test": False,
        "start_time": format_rfc3339(start),
        "end_time": format_rfc3339(start + timedelta(hours=1)),
        "program": {
            "id": 1,
            "name": "Fleet",
            "timezone": "UTC",
            "market": "",
            "program_type": "capacity",
        },
        "sites": [
            {
                "id": f"s{i}",
                "name": f"Site {i}",
                "customer_location_id": str(i),
                "commitment": 5,
                "drop_by": 5,
            }
            for i in range(sites)
        ],
    }


def fan_out(backend: str, handler_name: str, sites: int = SITES) -> dict[str, float]:
    """Seconds from the fetch that first sees the dispatch to its last curtail recorded (and
    the fetch's own), then from the fetch that sees it ended to its last restore recorded."""
    settings = ProcessorSettings()
    handler: Handler = (
        LogHandler() if handler_name == "log" else CommandHandler(COMMAND, settings.handler_timeout)
    )
    with fresh_database(backend) as engine, Sandbox() as sandbox:
        dispatch = fleet_dispatch(sites)
        started = _fetch(engine, sandbox, dispatch)
        fetched = time.perf_counter()
        curtailed = _pass(engine, handler, settings)
        done = time.perf_counter()
        _check_once(engine, sites)
        _fetch(engine, sandbox, {**dispatch, "end_time": format_rfc3339(utcnow())})
        ended = time.perf_counter()
        restored = _pass(engine, handler, settings)
        restored_at = time.perf_counter()
    assert curtailed == restored == sites, (curtailed, restored)
    return {
        "fetch_s": fetched - started,
        "pass_s": done - fetched,
        "restore_s": restored_at - ended,
        "workers": settings.workers,
    }


def _fetch(engine: Engine, sandbox: Sandbox, dispatch: dict[str, Any]) -> float:
    """Fetch the dispatch, served alone by the emulator, and return when the fetch started
    (time.perf_counter()). The emulator serves it no more once fetched: its thread that looks
    for changed dispatches to push serializes each one served every 50 ms (14 ms for 5,000
    sites), which took a fifth of the GIL from the pass measured in the same process, and a
    fifth of a core from the processes measured beside it."""
    sandbox.dispatches = [dispatch]
    started = time.perf_counter()
    dispatches.fetch(engine, VoltusClient(ApiSettings(sandbox.url, sandbox.key)))
    sandbox.dispatches = []
    return started


def _pass(engine: Engine, handler: Handler, settings: ProcessorSettings) -> int:
    """A pass, its handler printing to /dev/null: the actions it ran."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        return processor.process(engine, handler, settings).succeeded


def spawn_floor(count: int = SITES, wrapped: bool = False) -> float:
    """Seconds for a bare pool of ETL_WORKERS threads to run COMMAND `count` times; `wrapped`,
    inside the parent-death wrapper the command handler runs each command in."""
    workers = ProcessorSettings().workers
    argv = _dying_with_us([COMMAND]) if wrapped else [COMMAND]

    def spawn(_: int) -> None:
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(spawn, range(count)))
    return time.perf_counter() - started


def processes(count: int, sites: int = SITES) -> float:
    """Seconds for `count` whole `etl process` at once (start-up included) to run the curtails
    of a planned `sites`-site dispatch on PostgreSQL, the log handler printing to /dev/null."""
    with fresh_database("postgresql") as engine, Sandbox() as sandbox:
        _fetch(engine, sandbox, fleet_dispatch(sites))
        planner.plan(engine, ProcessorSettings())
        url = engine.url.render_as_string(hide_password=False)
        env = {**os.environ, "ETL_DATABASE_URL": url, "VOLTUS_API_URL": sandbox.url}
        started = time.perf_counter()
        runs = [
            subprocess.Popen([ETL, "process", "-q"], env=env, stdout=subprocess.DEVNULL)
            for _ in range(count)
        ]
        codes = [run.wait() for run in runs]
        elapsed = time.perf_counter() - started
        _check_once(engine, sites)
    assert codes == [0] * count, codes
    return elapsed


def push(backend: str, sites: int = SITES) -> dict[str, float]:
    """Seconds from a webhook's notification to the first and to the last curtail recorded
    done (the attempts' own times, on this machine's clock), by a whole `etl serve`."""
    with Sandbox() as sandbox, scratch_url(backend) as database_url:
        sandbox.dispatches = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            listen = f"127.0.0.1:{probe.getsockname()[1]}"
        env = {
            **os.environ,
            "ETL_DATABASE_URL": database_url,
            "VOLTUS_API_URL": sandbox.url,
            "VOLTUS_API_KEY": sandbox.key,
            "ETL_HANDLER": "log",
        }
        subprocess.run([ETL, "db", "upgrade"], env=env, check=True, capture_output=True)
        command = [ETL, "serve", "--every", "600", "--listen", listen, "-q"]
        service = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            push_path.wait_until(lambda: push_path.answers(f"http://{listen}/healthz"))
            sandbox.dispatches = [fleet_dispatch(sites)]
            sent = time.time()
            push_path.notify(f"http://{listen}/voltus/webhook", "fleet")
            push_path.wait_until(lambda: _curtailed(engine) == sites, seconds=120)
            with engine.connect() as conn:
                first, last = conn.execute(
                    text(
                        "SELECT min(finished_at), max(finished_at) FROM action_attempts"
                        " WHERE outcome = 'succeeded'"
                    )
                ).one()
            _check_once(engine, sites)
        finally:
            service.terminate()
            service.wait(timeout=60)
            engine.dispose()
    return {"first_s": _seconds(first) - sent, "last_s": _seconds(last) - sent}


def telemetry(backend: str, minutes: int = 10, sites: int = SITES) -> dict[str, float]:
    """etl's CPU seconds per second of the fleet's readings, and the readings sent."""
    with fresh_database(backend) as engine, Sandbox() as sandbox:
        sandbox.sites = [
            {
                "id": f"s{i}",
                "name": f"Site {i}",
                "customer_location_id": str(i),
                "meters": [{"id": f"m{i}", "name": "Main", "asset_type": "load"}],
            }
            for i in range(sites)
        ]
        client = VoltusClient(ApiSettings(sandbox.url, sandbox.key))
        dispatches.fetch(engine, client, include_sites=True)
        first = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=minutes)
        cpu, sent = 0.0, 0
        for minute in range(minutes):
            ends = [first + timedelta(minutes=minute, seconds=s) for s in (30, 60)]
            lines = ["site_id,meter_id,timestamp,kw,kwh\n"] + [
                f"s{i},m{i},{format_rfc3339(end)},{i % 97}.5,\n"
                for end in ends
                for i in range(sites)
            ]
            started = time.thread_time()
            queued = readings.queue_lines(engine, lines, "bench")
            summary = send_telemetry.drain(engine, client)
            cpu += time.thread_time() - started
            assert queued.queued == len(lines) - 1 == summary.sent, (queued, summary)
            sent += summary.sent
    return {"core": cpu / (minutes * 60), "cpu_s": cpu, "sent": sent}


def _curtailed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM actions WHERE kind = 'curtail' AND state = 'succeeded'")
            ).scalar_one()
        )


def _seconds(moment: Any) -> float:
    """A time read back from either database (SQLite's is its naive UTC text) as Unix time."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    return float(moment.timestamp())


def _check_once(engine: Engine, sites: int) -> None:
    """Every curtail succeeded at its first and only attempt: no handler call twice."""
    with engine.connect() as conn:
        attempts = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT a.id) FROM action_attempts t"
                " JOIN actions a ON a.id = t.action_id"
                " WHERE a.kind = 'curtail' AND a.state = 'succeeded'"
            )
        ).one()
    assert tuple(attempts) == (sites, sites), f"attempts, actions: {tuple(attempts)}"
