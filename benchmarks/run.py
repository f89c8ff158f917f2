"""The benchmark entry point: `.venv/bin/python -m benchmarks.run` from the repository.

Speed is reported as ratios against a floor measured in the same run on the same machine (these
machines are noisy; absolute times are printed only beside their floor).
"""

import argparse
import math
import os

from benchmarks import fleet, ingest, processor, send, year
from benchmarks import push as push_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 50_000],
        help="dispatches in the synthetic API (default 1000 10000 50000)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; medians reported")
    parser.add_argument(
        "--history",
        type=int,
        nargs=2,
        default=[10_000, 1_000_000],
        metavar=("SMALL", "LARGE"),
        help="historical dispatches for the planning figure (default 10000 1000000)",
    )
    parser.add_argument(
        "--planning-backends",
        default="sqlite",
        help="databases for the planning figure, comma-separated (postgresql: +4 min at 1M)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=PARTS,
        help="the parts to run (default: all)",
    )
    args = parser.parse_args()
    parts = {
        "ingestion": lambda: ingestion(args.sizes, args.runs),
        "cron": cron,
        "planning": lambda: planning(args.history, args.planning_backends.split(",")),
        "latency": latency,
        "throughput": throughput,
        "push": push,
        "sending": lambda: sending(args.runs),
        "fleet": fleet_scale,
        "year": year_history,
    }
    for name in args.only:
        parts[name]()


PARTS = [
    "ingestion",
    "cron",
    "planning",
    "latency",
    "throughput",
    "push",
    "sending",
    "fleet",
    "year",
]


def ingestion(sizes: list[int], runs: int) -> None:
    print("== Ingestion: etl against two floors, same synthetic API, same run ==")
    print(f"N dispatches x 4 sites, 500 sites, 20 programs; medians of {runs} runs. The first load")
    print(
        "against the same-schema floor (benchmarks/same_schema.py: the rows etl wrote, written by"
    )
    print("the raw driver into etl's own schema, executemany / COPY; target <= 1.5x), and against")
    print("the plain raw floor (benchmarks/floor.py: a schema of its own, no events) as the other")
    print("cases are (targets, SQLite: unchanged reload <= 1.0x); peak = traced Python allocations")
    print("during the first load, against the plain floor's (target <= 1.5x).")
    header = f"{'database':<11}{'N':>7}  {'first/same':>17}  {'first/plain':>15}  {'unchanged':>15}"
    print(header + f"  {'1% modified':>15}  {'peak MiB':>17}")
    for backend in ("sqlite", "postgresql"):
        for count in sizes:
            r = ingest.compare(backend, count, runs)
            same = _ratio(r["etl_first"], r["same_first"], "s")
            met = "met" if r["etl_first"] <= 1.5 * r["same_first"] else "NOT"
            cells = [f"{same} {met}"] + [
                _ratio(r[f"etl_{case}"], r[f"floor_{case}"], "s")
                for case in ("first", "reload", "modified")
            ]
            peak = _ratio(r["etl_peak"] / 2**20, r["floor_peak"] / 2**20, "")
            widths = (17, 15, 15, 15)
            print(
                f"{backend:<11}{count:>7,}  "
                + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
                + f"  {peak:>17}"
            )
    print()


def cron() -> None:
    r = ingest.cron_process()
    print("== The minutely job: whole process, `etl run` with 200 unchanged dispatches, against ==")
    print("== `python benchmarks/floor.py` loading 1,000 (target <= 3x); medians of 7 ==")
    print(f"etl {r['etl']:.3f} s, floor {r['floor']:.3f} s: {r['etl'] / r['floor']:.1f}x")
    print(f"etl --help {r['help']:.3f} s (target < 0.3 s)")
    steps = [
        ("Python interpreter", r["interpreter"]),
        ("+ import sqlalchemy", r["sqlalchemy"] - r["interpreter"]),
        ("+ import requests, typer", r["libraries"] - r["sqlalchemy"]),
        ("+ etl's modules", r["etl_modules"] - r["libraries"]),
        ("+ the work (fetch, plan, claim)", r["etl"] - r["etl_modules"]),
    ]
    print("where etl run's time goes: " + "; ".join(f"{n} {s * 1000:.0f} ms" for n, s in steps))
    print()


def planning(history: list[int], backends: list[str]) -> None:
    print("== Planning pass, median of 30 (after the store's first), vs its lookups in raw SQL ==")
    print(f"{'database':<12}{'history':>11}{'etl ms':>9}{'floor ms':>10}{'etl/floor':>11}")
    for backend in backends:
        results = {n: processor.planning(backend, n) for n in history}
        for n, result in results.items():
            ratio = result["plan_ms"] / result["floor_ms"]
            print(
                f"{backend:<12}{n:>11,}{result['plan_ms']:>9.2f}{result['floor_ms']:>10.2f}"
                f"{ratio:>10.1f}x"
            )
        small, large = (results[n]["plan_ms"] for n in history)
        met = large < 10 and large / small < 2
        print(
            f"{backend:<12}{'':>11} large/small history: {large / small:.2f}x "
            f"(target < 10 ms and < 2x: {'met' if met else 'NOT met'})"
        )
    print()


def latency() -> None:
    print("== 500-site dispatch: its start_time to the end of the last 200 ms handler call, ==")
    print("== `etl run --every` waiting; floor = the pool's bound, ceil(500 / workers) x 200 ms ==")
    print(f"{'database':<12}{'etl s':>8}{'floor s':>9}{'etl/floor':>11}  target < 5 s")
    for backend in ("sqlite", "postgresql"):
        result = processor.curtail_latency(backend)
        verdict = "met" if result["latency_s"] < 5 and result["calls"] == 500 else "NOT met"
        print(
            f"{backend:<12}{result['latency_s']:>8.2f}{result['floor_s']:>9.2f}"
            f"{result['latency_s'] / result['floor_s']:>10.2f}x  {verdict}"
            f" ({result['calls']} calls, {result['workers']} workers)"
        )
    print()


def throughput() -> None:
    print("== Actions per second, 2,000 due, log handler to /dev/null, PostgreSQL, ==")
    print("== whole `etl process` runs at once (process start-up included) ==")
    one = processor.actions_per_second(1)
    four = processor.actions_per_second(4)
    print(f"1 process: {one['actions_per_s']:.0f}/s; 4 processes: {four['actions_per_s']:.0f}/s")
    print(f"4 / 1: {four['actions_per_s'] / one['actions_per_s']:.2f}x")


def push() -> None:
    print()
    print("== Push: `etl serve` (polling every 600 s), a notification for a dispatch active at ==")
    print("== once to its webhook handler's call; API requests for a burst of 100 notifications ==")
    for backend in ("sqlite", "postgresql"):
        r = push_path.measure(backend)
        verdict = "met" if r["p95"] < 1 else "NOT met"
        print(
            f"{backend:<12}p50 {r['p50'] * 1000:.0f} ms, p95 {r['p95'] * 1000:.0f} ms over "
            f"{r['count']:.0f} (target p95 < 1 s: {verdict}); 100 notifications for one "
            f"dispatch: {r['burst_one']:.0f} API requests; for 100 dispatches: "
            f"{r['burst_many']:.0f}"
        )


def sending(runs: int, count: int = 20_000) -> None:
    print()
    print(f"== Telemetry sent: {count:,} readings checked, queued, sent in batches of 2,048 ==")
    print("== into the emulator and marked sent; floor: the same POSTs by hand (urllib) ==")
    print(f"{'database':<12}{'etl/s':>10}{'floor/s':>10}{'floor/etl':>11}")
    for backend in ("sqlite", "postgresql"):
        r = send.measure(backend, count, runs)
        print(f"{backend:<12}{r['etl']:>10,.0f}{r['floor']:>10,.0f}{r['floor'] / r['etl']:>10.2f}x")


def fleet_scale() -> None:
    sites = f"{fleet.SITES:,}"
    print()
    print(f"== Fleet fan-out: one dispatch of {sites} sites, first seen at its start (issue 31) ==")
    print("== from the fetch that sees it to its last curtail recorded done, in one process; ==")
    print("== `restore s`: from the fetch that sees it ended to its last restore recorded ==")
    print(
        f"{'database':<12}{'handler':<12}{'fetch s':>9}{'pass s':>8}{'actions/s':>11}"
        f"{'restore s':>11}  target"
    )
    for backend in ("sqlite", "postgresql"):
        r = fleet.fan_out(backend, "log")
        rate = fleet.SITES / r["pass_s"]
        target = "PostgreSQL: <= 2 s, >= 2,500/s"
        if backend == "postgresql":
            target += ": met" if r["pass_s"] <= 2 else ": NOT met"
        times = f"{r['fetch_s']:>9.2f}{r['pass_s']:>8.2f}"
        print(f"{backend:<12}{'log':<12}{times}{rate:>11,.0f}{r['restore_s']:>11.2f}  {target}")
    command = fleet.fan_out("postgresql", "command")
    bare, wrapped = fleet.spawn_floor(), fleet.spawn_floor(wrapped=True)
    print(
        f"{'postgresql':<12}{fleet.COMMAND:<12}{command['fetch_s']:>9.2f}{command['pass_s']:>8.2f}"
        f"{fleet.SITES / command['pass_s']:>11,.0f}{command['restore_s']:>11.2f}"
    )
    print(
        f"  spawn floor ({command['workers']:.0f} threads, {sites} x {fleet.COMMAND}): "
        f"{bare:.2f} s, etl {command['pass_s'] / bare:.2f}x (target <= 1.2x: "
        f"{'met' if command['pass_s'] <= 1.2 * bare else 'NOT met'}); the same floor with the "
        f"parent-death wrapper etl puts around each command (setpriv, sh): {wrapped:.2f} s, "
        f"etl {command['pass_s'] / wrapped:.2f}x"
    )
    one, three = fleet.processes(1), fleet.processes(3)
    print(
        f"whole `etl process` runs on one PostgreSQL store, log handler: 1 process {one:.2f} s, "
        f"3 at once {three:.2f} s: {three / one:.2f}x (target <= 0.5x: "
        f"{'met' if three <= 0.5 * one else 'NOT met'}; {os.cpu_count()} cores here); no action "
        "called twice"
    )
    print(
        f"telemetry, {sites} sites x a reading every 30 s (167/s), 10 minutes of them queued and "
        "sent a minute at a time:"
    )
    for backend in ("sqlite", "postgresql"):
        t = fleet.telemetry(backend)
        print(
            f"  {backend:<12}{t['sent']:,.0f} sent; etl's CPU {t['cpu_s']:.1f} s for 600 s of "
            f"readings: {t['core']:.3f} of a core (target <= 0.1: "
            f"{'met' if t['core'] <= 0.1 else 'NOT met'})"
        )
    for backend in ("sqlite", "postgresql"):
        p = fleet.push(backend)
        print(
            f"push, {backend}: webhook to first curtail done {p['first_s'] * 1000:,.0f} ms "
            f"(target <= 100 ms: {'met' if p['first_s'] <= 0.1 else 'NOT met'}), to the last "
            f"{p['last_s']:.2f} s"
        )


def year_history(
    days: int = year.DAYS,
    sites: int = year.SITES,
    rebuild: bool = False,
    telemetry_days: int = year.TELEMETRY_DAYS,
    runs: int = 3,
    command_limit: float | None = 120.0,
) -> None:
    """Builds the year store once (kept in the schema year_fleet), measures it, prints it."""
    built = year.build(days, sites, rebuild, telemetry_days)
    r = year.measure(runs, command_limit)
    print()
    print(f"== A year of history on PostgreSQL (issue 31): {days} days of {sites:,} sites, two ==")
    print("== dispatches a day, every action, attempt and event, a fetch a minute; readings of ==")
    print(f"== the last {telemetry_days} days; each read's whole command and its library call ==")
    made = f"built in {built['build_s']:,.0f} s" if built["build_s"] else "reused"
    total = sum(v for k, v in r.items() if k.startswith("bytes_"))
    print(f"schema {year.SCHEMA} ({made}), {total / 2**30:.1f} GiB:")
    for table, size in ((k[6:], v) for k, v in r.items() if k.startswith("bytes_")):
        count = built.get(table)
        shown = f"{count:>13,.0f} rows" if count is not None else f"{'':>18}"
        print(f"  {table:<26}{shown}{size / 2**20:>11,.0f} MiB")
    print(
        f"measuring a dispatch of {sites:,} sites as its readings are stored (etl.ingest.measures):"
        f" {built['measure_s']:.1f} s, the median"
    )
    print(f"{'read':<36}{'command s':>10}{'library s':>11}  target < {year.TARGET_S:g} s")
    named = [  # (its library call's key, its command's key, what it is)
        ("status", "status_cmd", "etl status"),
        ("now_page", "now_page_get", "the console's now page (GET /console/)"),
        ("performance_month", "performance_month_cmd", "etl report performance, a month"),
        ("audit_site", "audit_site_cmd", f"etl audit --site {year.AUDITED_SITE}"),
    ]
    for key, command_key, label in named:
        command, library = r[command_key], r[f"{key}_lib"]
        met = "met" if max(command, library) < year.TARGET_S else "NOT met"
        shown = "not run" if math.isnan(command) else f"{command:.2f}"
        print(f"{label:<36}{shown:>10}{library:>11.2f}  {met}")
    for key, label in (("performance_month", "a month's performance"), ("audit_site", "the audit")):
        print(
            f"  {label}: {r[f'{key}_rows']:,.0f} rows; read by psycopg alone from hand-written SQL "
            f"(the floor): {r[f'{key}_floor']:.2f} s; the library call "
            f"{r[f'{key}_lib'] / r[f'{key}_floor']:.2f}x that"
        )
    first = r["now_page_get_first"]
    print(f"  (the console's first GET, its templates compiled: {first:.2f} s; the now page's")
    print("  library call: the verdict of etl status atop it, and pages.now_and_next; a command")
    print("  is not run when its library call alone took over the command limit)")
    ratio = r["run_cmd"] / r["run_stack_floor"]
    print(
        f"minutely `etl run` (emulator, no dispatch listed): {r['run_cmd']:.2f} s, its library "
        f"call {r['run_lib']:.2f} s; on an empty store {r['run_empty']:.2f} s (the history: "
        f"{r['run_cmd'] / r['run_empty']:.2f}x)"
    )
    print(
        f"  against the stack floor (benchmarks/floor.py loading 1,000 dispatches into PostgreSQL,"
        f" in a process that imports SQLAlchemy, requests, Typer, dateutil and psycopg first) "
        f"{r['run_stack_floor']:.2f} s: {ratio:.2f}x (target <= {year.RUN_TARGET:g}x: "
        f"{'met' if ratio <= year.RUN_TARGET else 'NOT met'}); against the bare floor "
        f"{r['run_floor']:.2f} s: {r['run_cmd'] / r['run_floor']:.2f}x"
    )


def _ratio(value: float, floor: float, unit: str) -> str:
    return f"{value / floor:.2f}x ({value:.2f}{unit})"


if __name__ == "__main__":
    main()
