"""The `etl` command: parses options, calls one library function, prints the result.

Data (reports, audit, status, dry runs) goes to stdout; diagnostics (what a fetch or a pass did,
warnings, errors) are log records on stderr (etl.logs). Expected failures (bad configuration, API
down or refusing the key, database missing or locked) are EtlErrors: `main` logs them as one line
and exits with their code.

Each command imports the library modules it uses: `etl --help` loads no database code, and the
minutely `etl run` none of the reports', the emulator's or Alembic's.
"""

import json
import math
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from etl import __version__
from etl.base import logs
from etl.base.config import SANDBOX_URL, ProcessorSettings, api_settings
from etl.base.errors import ApiError, EtlError
from etl.base.logs import log
from etl.base.timeutil import TimeShift, format_rfc3339, parse_duration, parse_moment, time_shift

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from etl.act import claims, planner, processor
    from etl.ingest import dispatches
    from etl.read import metrics, status
    from etl.source.api import Webhook

ACTIONS_FAILED_EXIT = 5

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # its tracebacks show local variables, such as the API key
)
db_app = typer.Typer(help="Create, migrate and prune the database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
webhooks_app = typer.Typer(
    help="List, register and delete the account's Voltus webhooks (for `etl serve`).",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="ETL_DATABASE_URL",
        help="SQLAlchemy URL; default sqlite:///$XDG_DATA_HOME/etl/etl.db "
        "(~/.local/share/etl/etl.db).",
        show_default=False,
    ),
]
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="VOLTUS_API_URL",
        help="Voltus API base URL; default https://sandbox.voltus.co.",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="VOLTUS_API_KEY",
        help="Voltus API key; required unless the URL is the public sandbox.",
        show_default=False,
    ),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Log only warnings and errors (on stderr).")
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Also log each HTTP attempt, claim and handler call (on stderr)."
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the actions that a pass would run now; record, claim and run nothing.",
    ),
]


def _moment(value: str | None) -> datetime | None:
    try:
        return None if value is None else parse_moment(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


Since = Annotated[
    datetime | None,
    typer.Option(
        parser=_moment,
        metavar="TIME",
        help="From this time: 2024-02-01, 2024-02-01T09:00Z (UTC unless an offset is given), "
        "or 24h, 7d for that long ago.",
    ),
]
Until = Annotated[
    datetime | None,
    typer.Option(parser=_moment, metavar="TIME", help="Before this time (same forms as --since)."),
]


Tz = Annotated[
    str,
    typer.Option(
        "--tz",
        metavar="ZONE",
        help="Show times in utc, local (this machine's zone), program (each dispatch's program's "
        "zone) or an IANA zone such as America/Chicago; each with its offset.",
    ),
]


def _time_shift(choice: str) -> TimeShift:
    try:
        return time_shift(choice)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--tz") from None


def _number_between(low: float, high: float, what: str) -> Callable[[str], float]:
    """A parser of numbers in [low, high]; checked here, not by typer's range options: some
    typer versions let `nan` through them."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not low <= number <= high:  # false for nan too
            raise typer.BadParameter(f"{value[:40]!r} is not {what} from {low:g} to {high:g}")
        return number

    return parse


_every_seconds = _number_between(1, 86400, "a number of seconds")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"etl {__version__}")
        raise typer.Exit()


@app.callback()
def processor_options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print etl's version."
        ),
    ] = False,
    handler: Annotated[
        str | None,
        typer.Option(
            envvar="ETL_HANDLER",
            help="log, command, webhook, or an `etl.handlers` entry point; default: command if "
            "ETL_ACTION_COMMAND is set, webhook if ETL_ACTION_WEBHOOK is, else log.",
        ),
    ] = None,
    action_command: Annotated[
        str | None,
        typer.Option(envvar="ETL_ACTION_COMMAND", help="Program run once per action."),
    ] = None,
    action_webhook: Annotated[
        str | None,
        typer.Option(envvar="ETL_ACTION_WEBHOOK", help="URL that receives one POST per action."),
    ] = None,
    claim_timeout: Annotated[
        float,
        typer.Option(
            envvar="ETL_CLAIM_TIMEOUT_SECONDS",
            help="Seconds before an unfinished claim (its process died) is taken over.",
        ),
    ] = 300.0,
    retry_backoff: Annotated[
        float,
        typer.Option(
            envvar="ETL_RETRY_BACKOFF_SECONDS",
            help="First retry of a failed action after this, then doubling (at most 1 hour).",
        ),
    ] = 30.0,
    include_test: Annotated[
        bool,
        typer.Option(envvar="ETL_INCLUDE_TEST", help="Run the handler for test dispatches too."),
    ] = False,
    lead_time: Annotated[
        float,
        typer.Option(envvar="ETL_LEAD_TIME_SECONDS", help="Curtail this long before start_time."),
    ] = 0.0,
    workers: Annotated[
        int, typer.Option(envvar="ETL_WORKERS", help="Handler calls at once in one process.")
    ] = 32,
    handler_timeout: Annotated[
        float,
        typer.Option(
            envvar="ETL_HANDLER_TIMEOUT_SECONDS",
            help="Time limit of one command or webhook call; shorter than the claim timeout.",
        ),
    ] = 60.0,
) -> None:
    """Ingest Voltus dispatches into SQLite or PostgreSQL, and act on each exactly once.

    The options here configure `etl process` and `etl run`: give them before the command
    (`etl --workers 8 run`), or as their environment variables."""
    # built when a command needs them, so a bad setting fails only the commands that use it
    ctx.obj = partial(
        ProcessorSettings,
        claim_timeout=claim_timeout,
        retry_backoff=retry_backoff,
        include_test=include_test,
        lead_time=lead_time,
        workers=workers,
        handler_timeout=handler_timeout,
        handler=handler,
        action_command=action_command,
        action_webhook=action_webhook,
    )


def open_store(database_url: str | None) -> "Engine":
    from etl.store.db import check_schema, make_engine

    engine = make_engine(database_url, create=False)
    check_schema(engine)
    return engine


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create the schema, or migrate it to this version's; safe to run again."""
    from etl.store import migrate  # Alembic is slow to import: only this command pays for it
    from etl.store.db import describe, make_engine

    engine = make_engine(database_url)
    before, after = migrate.migrate(engine)
    if before == after:
        typer.echo(f"{describe(engine.url)}: schema already at revision {after}")
    else:
        typer.echo(f"{describe(engine.url)}: schema migrated from {before or 'empty'} to {after}")


@db_app.command("bind")
def db_bind(
    database_url: DatabaseUrl = None, api_url: ApiUrl = None, api_key: ApiKey = None
) -> None:
    """Make the store serve this API and key from now on: after a key rotation, or to move it
    to another API on purpose (recorded as a `store_bound` event)."""
    from etl.store import binding

    api = api_settings(api_url, api_key)
    before, after = binding.bind(open_store(database_url), api)
    if before is None:
        typer.echo(f"store bound to the Voltus API at {after.api_origin}")
    elif before.api_origin != after.api_origin:
        typer.echo(f"store moved from the Voltus API at {before.api_origin} to {after.api_origin}")
    else:
        typer.echo(f"store bound to a new key for the Voltus API at {after.api_origin}")


@app.command()
def fetch(
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    sites: Annotated[
        bool, typer.Option("--sites", help="Also refresh the account's sites (the nightly pass).")
    ] = False,
    telemetry: Annotated[
        bool,
        typer.Option(
            "--telemetry",
            help="Then fetch the metered load around each dispatch that ended 20 minutes ago or "
            "more, until every interval of it is stored.",
        ),
    ] = False,
    lookback: Annotated[
        str, typer.Option(help="--telemetry: for dispatches that ended this recently.")
    ] = "7d",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fetch the last 24 hours of dispatches once and record every change."""
    from etl.ingest import dispatches
    from etl.source.api import VoltusClient

    logs.set_verbosity(verbose, quiet)
    lookback_delta = _duration(lookback)
    engine = open_store(database_url)
    client = VoltusClient(api_settings(api_url, api_key))
    _log_fetch(dispatches.fetch(engine, client, include_sites=sites))
    if telemetry:
        from etl.ingest import telemetry as meter_readings

        summary = meter_readings.fetch_telemetry(engine, client, lookback_delta)
        log.info(
            "telemetry %s: %s windows, %s requests: %s readings new, %s changed, %s rejected",
            summary.fetch_run_id,
            summary.windows,
            summary.requests,
            summary.readings_new,
            summary.readings_changed,
            summary.rejected,
            extra={"fetch_run": summary.fetch_run_id},
        )
        if summary.error:
            raise ApiError(summary.error)


def _log_fetch(summary: "dispatches.FetchSummary") -> None:
    from etl.store.schema import FetchKind, FetchOutcome

    what = "fetch" if summary.kind == FetchKind.LISTING else "lookup"
    if summary.outcome == FetchOutcome.SUPERSEDED:
        log.info("%s %s: superseded, %s", what, summary.fetch_run_id, summary.note)
        return
    log.info(
        "%s %s: %s dispatches received: %s new, %s changed, %s unchanged, %s rejected; "
        "%s sites received; %s events",
        what,
        summary.fetch_run_id,
        summary.dispatches_received,
        summary.dispatches_created,
        summary.dispatches_changed,
        summary.dispatches_unchanged,
        summary.rejected,
        summary.sites_received,
        len(summary.events),
        extra={"fetch_run": summary.fetch_run_id},
    )
    for event in summary.events:
        log.info(
            "%s",
            event.describe(),
            extra={"event": event.kind, "dispatch": event.dispatch_id, "site": event.site_id},
        )


def _log_pass(summary: "processor.PassSummary") -> None:
    planned = ", ".join(f"{n} {state}" for state, n in sorted(summary.planned.items()))
    line = (
        f"process: planned {planned or 'nothing'}; ran {summary.succeeded} succeeded, "
        f"{summary.failed} failed"
    )
    if summary.overtaken:
        line += f", {summary.overtaken} finished after another process took them over"
    log.info(line)


def _print_dry_run(planned: "planner.PlanSummary", due: "list[claims.Claimed]") -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(planned.counts.items()))
    typer.echo(f"dry run: would plan {counts or 'nothing'}; would run {len(due)} actions:")
    for claimed in due:
        request = claimed.request
        typer.echo(
            f"  {request.action} site {request.site_id} for dispatch {request.dispatch_id}"
            f" (episode {claimed.episode}, attempt {claimed.attempt + 1},"
            f" key {request.idempotency_key})"
        )


def _log_outcome(outcome: "processor.RunEvent") -> None:
    """One event of a long run: a fetch's or a pass's summary, or an error it lived through."""
    from etl.ingest.dispatches import FetchSummary

    if isinstance(outcome, EtlError):
        log.error("%s", outcome)
    elif isinstance(outcome, FetchSummary):
        _log_fetch(outcome)
    else:
        _log_pass(outcome)


def _fail_if_actions_failed(summary: "processor.PassSummary") -> None:
    if summary.failed:
        log.error(
            "%s action attempts failed; they are retried with backoff while their dispatch is "
            "active",
            summary.failed,
        )
        raise typer.Exit(ACTIONS_FAILED_EXIT)


@app.command()
def process(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Act once on the stored dispatches: run every due curtail and restore."""
    from etl.act import processor
    from etl.act.builtin_handlers import load_handler
    from etl.store import binding

    logs.set_verbosity(verbose, quiet)
    settings: ProcessorSettings = ctx.obj()
    if dry_run:
        _print_dry_run(*processor.dry_run(open_store(database_url), settings))
        return
    handler = load_handler(settings, api_url or SANDBOX_URL)
    engine = open_store(database_url)
    binding.check(engine, api_url or SANDBOX_URL, None)  # it sends no request: no key
    summary = processor.process(engine, handler, settings, processor.stop_on_signals())
    _log_pass(summary)
    _fail_if_actions_failed(summary)


@app.command()
def run(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    every: Annotated[
        float | None,
        typer.Option(
            parser=_every_seconds,
            metavar="SECONDS",
            help="Keep running: fetch every SECONDS (1 to 86400), act as soon as an action falls "
            "due, stop on SIGTERM or SIGINT after finishing the actions in hand.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fetch, then act on what is due (the minutely cron job); --every loops."""
    from etl.act import processor
    from etl.act.builtin_handlers import load_handler
    from etl.ingest import dispatches
    from etl.source.api import VoltusClient
    from etl.store import binding

    logs.set_verbosity(verbose, quiet)
    settings: ProcessorSettings = ctx.obj()
    api = api_settings(api_url, api_key)
    if dry_run and every is not None:
        raise typer.BadParameter("--dry-run runs once: drop --every")
    engine = open_store(database_url)
    binding.check(engine, api.url, api.key)  # not even the pass: it would act for another
    client = VoltusClient(api)
    if dry_run:  # the fetch is real (it records what the API says); the pass is not
        _log_fetch(dispatches.fetch(engine, client))
        _print_dry_run(*processor.dry_run(engine, settings))
        return
    handler = load_handler(settings, api.url)
    stop = processor.stop_on_signals()
    if every is not None:
        for outcome in processor.run_loop(engine, client, handler, settings, every, stop):
            _log_outcome(outcome)
        return
    fetch_error = None
    try:
        _log_fetch(dispatches.fetch(engine, client))
    except EtlError as error:  # what is already stored is still acted on
        fetch_error = error
        log.error("%s", error)
    summary = processor.process(engine, handler, settings, stop)
    _log_pass(summary)
    if fetch_error is not None:
        raise typer.Exit(fetch_error.exit_code)
    _fail_if_actions_failed(summary)


@app.command()
def serve(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    every: Annotated[
        float,
        typer.Option(
            parser=_every_seconds,
            metavar="SECONDS",
            help="Poll every SECONDS (1 to 86400): the safety net under the webhooks.",
        ),
    ] = 30.0,
    listen: Annotated[
        str,
        typer.Option(
            envvar="ETL_LISTEN",
            metavar="HOST:PORT",
            help="Where to listen for webhooks, /healthz and /metrics (port 0: any free one).",
        ),
    ] = "127.0.0.1:8080",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ETL_WEBHOOK_TOKEN",
            help="The webhook's path becomes /voltus/webhook/TOKEN, and any other is 404; "
            "required to listen beyond loopback.",
            show_default=False,
        ),
    ] = None,
    max_age: Annotated[
        str, typer.Option(help="/healthz and /metrics: as `etl status --max-age`.")
    ] = "5m",
    window: Annotated[
        str, typer.Option(help="/healthz and /metrics: as `etl status --window`.")
    ] = "24h",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run as a service: everything `etl run --every` does, and act within a second on Voltus's
    webhooks; stop on SIGTERM or SIGINT after finishing the actions in hand."""
    from etl import serve as service
    from etl.act import processor
    from etl.act.builtin_handlers import load_handler
    from etl.source.api import VoltusClient
    from etl.store import binding

    logs.set_verbosity(verbose, quiet)
    settings: ProcessorSettings = ctx.obj()
    api = api_settings(api_url, api_key)
    where = service.listener(listen, token)
    check = (_duration(max_age), _duration(window))
    handler = load_handler(settings, api.url)
    engine = open_store(database_url)
    binding.check(engine, api.url, api.key)

    stop = processor.stop_on_signals()
    client = VoltusClient(api)
    service.serve(engine, client, handler, settings, every, where, check, stop, _log_outcome)


@webhooks_app.command("list")
def webhooks_list(api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """The account's registrations: id, URL (its secrets masked) and events."""
    from etl.source.api import VoltusClient

    registered = VoltusClient(api_settings(api_url, api_key)).webhooks()
    for webhook in registered:
        typer.echo(_describe_webhook(webhook))
    if not registered:
        typer.echo("(no webhooks)")


@webhooks_app.command("register")
def webhooks_register(
    url: Annotated[
        str, typer.Argument(help="Where Voltus will POST: https://HOST/voltus/webhook/TOKEN.")
    ],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Have Voltus POST dispatch.create and dispatch.update notifications to URL."""
    from urllib.parse import urlsplit

    from etl.base.redact import redact_url
    from etl.source.api import VoltusClient

    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        shown = redact_url(url)[:80]
        raise typer.BadParameter(f"not an http(s) URL: {shown!r}", param_hint="URL")
    webhook = VoltusClient(api_settings(api_url, api_key)).register_webhook(url)
    typer.echo(f"registered {_describe_webhook(webhook)}")


@webhooks_app.command("delete")
def webhooks_delete(
    webhook_id: Annotated[str, typer.Argument(metavar="ID", help="As `etl webhooks list` shows.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Stop Voltus's notifications to one registration (for good: it cannot be undone)."""
    from etl.source.api import VoltusClient

    if not webhook_id.strip():
        raise typer.BadParameter("an empty id names no registration", param_hint="'ID'")

    if not VoltusClient(api_settings(api_url, api_key)).delete_webhook(webhook_id):
        raise ApiError(f"no webhook {webhook_id!r}", "see `etl webhooks list`")
    typer.echo(f"deleted webhook {webhook_id}")


def _describe_webhook(webhook: "Webhook") -> str:
    from etl.base.redact import redact_url

    return logs.one_line(f"{webhook.id}  {redact_url(webhook.url)}  {', '.join(webhook.events)}")


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8787,
    scenario: Annotated[
        Path | None,
        typer.Option(help="Scenario JSON file; default: a built-in one around the current time."),
    ] = None,
    key: Annotated[str, typer.Option(help="The API key it accepts.")] = "secret",
    fail: Annotated[
        list[int] | None,
        typer.Option(help="Answer the next request with this status (repeat for several)."),
    ] = None,
    retry_after: Annotated[
        str | None, typer.Option(help="Retry-After header sent with each injected 429.")
    ] = None,
    delay: Annotated[float, typer.Option(help="Seconds to wait before each response.")] = 0.0,
    certification: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Replay one of Voltus's integration tests instead: basic, ancillary, "
            "two-programs or cancelled.",
            show_default=False,
        ),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            parser=_number_between(0.01, 10000, "a speed"),
            help="Replay the scenario's relative times this many times faster.",
        ),
    ] = 1.0,
) -> None:
    """Serve a local emulator of the Voltus API until interrupted."""
    from etl.sandbox.emulator import Faults, Sandbox, certification_scenario

    if certification is not None:
        if scenario is not None:
            raise typer.BadParameter("give --scenario or --certification, not both")
        scenario = certification_scenario(certification)
    emulator = Sandbox(scenario, host=host, port=port, key=key, speed=speed)
    emulator.faults = Faults(
        statuses=list(fail or []), retry_after=retry_after, delay_seconds=delay
    )
    typer.echo(f"Voltus API emulator listening on {emulator.url}")
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        emulator.stop()


class ReportKind(StrEnum):
    dispatches = "dispatches"
    sites = "sites"
    programs = "programs"
    curtailments = "curtailments"
    performance = "performance"


class Period(StrEnum):
    day = "day"
    month = "month"


@app.command()
def report(
    kind: Annotated[
        ReportKind,
        typer.Argument(
            help="dispatches: one row per dispatch with its counts and outcome; sites: committed "
            "kW per site per day or month (--by); programs: one row per program; curtailments: "
            "one row per action; performance: one row per dispatch and site, the metered "
            "response (etl fetch --telemetry)."
        ),
    ],
    database_url: DatabaseUrl = None,
    since: Since = None,
    until: Until = None,
    program: Annotated[
        int | None,
        typer.Option(help="Only this program (its id).", min=-(2**31), max=2**31 - 1),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Only dispatches with this site (its id).")
    ] = None,
    test: Annotated[
        bool | None,
        typer.Option("--test/--no-test", help="Only test dispatches, or only the others."),
    ] = None,
    by: Annotated[Period, typer.Option(help="sites: per day or per month.")] = Period.day,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv, json (an array) or jsonl.")
    ] = "table",
    tz: Tz = "utc",
) -> None:
    """Report on dispatches, sites, programs or curtailments, from the SQL views."""
    from etl.read import output, reports

    if fmt not in output.FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(output.FORMATS)}", param_hint="--format")
    shift = _time_shift(tz)
    engine = open_store(database_url)
    f = reports.ReportFilter(since=since, until=until, program_id=program, site_id=site, test=test)
    match kind:
        case ReportKind.dispatches:
            query = reports.dispatches_report(f)
        case ReportKind.sites:
            query = reports.sites_report(f, by.value)
        case ReportKind.programs:
            query = reports.programs_report(f)
        case ReportKind.curtailments:
            query = reports.curtailments_report(f)
        case ReportKind.performance:
            query = reports.performance_report(f)
    columns = [c.name for c in query.selected_columns]
    zones = reports.program_zones(engine) if tz.lower() == "program" else {}
    rows = output.shift_times(
        reports.stream(engine, query),
        shift,
        lambda row: row.get("timezone") or zones.get(row.get("program_id")),
    )
    output.write(rows, columns, sys.stdout, fmt)


@app.command("audit")
def audit_command(
    database_url: DatabaseUrl = None,
    dispatch: Annotated[str | None, typer.Option(help="The story of this dispatch.")] = None,
    site: Annotated[str | None, typer.Option(help="The story of this site.")] = None,
    since: Since = None,
    until: Until = None,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON object per event.")] = False,
    tz: Tz = "utc",
    chart: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.svg",
            help="With --dispatch: write a picture of it instead, one panel per site (metered kW, "
            "baseline, target, each command), in the program's time zone.",
        ),
    ] = None,
) -> None:
    """What happened, in time order: dispatches seen and changed, actions planned, claimed,
    attempted, succeeded, failed, missed, skipped or superseded, with their idempotency keys.
    With no filter: the last 24 hours."""
    from etl.read import audit, output

    shift = _time_shift(tz)
    if chart is not None:
        _write_chart(database_url, dispatch, chart)
        return
    engine = open_store(database_url)
    query = audit.AuditQuery(dispatch, site, since, until).with_default_window()
    entries = output.shift_times(audit.trail(engine, query), shift, lambda row: row["timezone"])
    if jsonl:
        output.write(entries, audit.COLUMNS, sys.stdout, "jsonl")
        return
    shown = 0
    for shown, entry in enumerate(entries, 1):  # noqa: B007 (counted for the line below)
        typer.echo(audit.describe(entry))
    if not shown:
        typer.echo("(no events)")


class StatusFormat(StrEnum):
    text = "text"
    json = "json"
    prometheus = "prometheus"


def _write_chart(database_url: str | None, dispatch_id: str | None, path: Path) -> None:
    from etl.read import chart

    if dispatch_id is None:
        raise typer.BadParameter("--chart draws one dispatch: give --dispatch ID")
    engine = open_store(database_url)
    try:
        picture = chart.render(chart.chart_data(engine, dispatch_id))
    finally:
        engine.dispose()
    try:
        path.write_text(picture)
    except OSError as error:
        raise EtlError(f"cannot write {path}: {error.strerror}") from None
    typer.echo(f"wrote {path}")


@app.command("status")
def status_command(
    database_url: DatabaseUrl = None,
    max_age: Annotated[
        str,
        typer.Option(help="Stale (CRITICAL) when no fetch succeeded for this long: 5m, 1h..."),
    ] = "5m",
    window: Annotated[
        str,
        typer.Option(help="Report actions failed (CRITICAL) or missed (WARNING) this recently."),
    ] = "24h",
    min_delivery: Annotated[
        float,
        typer.Option(
            parser=_number_between(0, 1000, "a percentage"),
            metavar="PERCENT",
            help="WARNING when a site of a dispatch that ended within --window delivered under "
            "this percent of its commitment, by its metered load (etl fetch --telemetry).",
        ),
    ] = 50.0,
    fmt: Annotated[
        StatusFormat,
        typer.Option(
            "--format",
            help="text; json (one object); prometheus (node_exporter's textfile format).",
        ),
    ] = StatusFormat.text,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
) -> None:
    """Is the job healthy? Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (bad usage), as
    monitoring checks expect."""
    from etl.read import status

    max_age_delta, window_delta = _duration(max_age), _duration(window)
    fmt = StatusFormat.json if as_json else fmt
    try:
        engine = open_store(database_url)
        result = status.check(engine, max_age_delta, window_delta, min_delivery)
        counts = None
        if fmt == StatusFormat.prometheus:
            from etl.read import metrics

            counts = metrics.store_counts(engine)
    except EtlError as error:  # a store that cannot be read is as bad as it gets
        log.error("CRITICAL: %s", error)
        if fmt == StatusFormat.prometheus:
            _print_metrics(None, None, status.CRITICAL)
        raise typer.Exit(status.CRITICAL) from None
    match fmt:
        case StatusFormat.json:
            typer.echo(json.dumps(result.as_json(), indent=2))
        case StatusFormat.prometheus:
            _print_metrics(result, counts, result.code)
        case StatusFormat.text:
            _print_status(result)
    raise typer.Exit(result.code)


def _print_metrics(
    result: "status.Status | None", counts: "metrics.StoreCounts | None", code: int
) -> None:
    from etl.read import metrics

    typer.echo(metrics.exposition(metrics.StatusCollector(result, counts, code)), nl=False)


def _print_status(result: "status.Status") -> None:
    from etl.read import status

    def when(moment: datetime | None) -> str:
        return format_rfc3339(moment) if moment else "never"

    lines = [
        ("etl version", result.version),
        ("schema revision", result.schema_revision or "none"),
        ("last fetch ok", when(result.last_success_at)),
        ("last fetch failed", when(result.last_failure_at)),
        (
            "actions",
            f"{result.actions_due_or_running} due or running, "
            f"{result.restores_waiting} restores waiting for their dispatch's end",
        ),
        ("failed / missed", f"{result.failed_recently} / {result.missed_recently} recently"),
    ]
    if result.last_failure_error:
        lines.insert(3, ("  its error", result.last_failure_error))
    for label, value in lines:
        typer.echo(f"{label:<18}{logs.one_line(value)}")
    verdict = {status.OK: "OK", status.WARNING: "WARNING", status.CRITICAL: "CRITICAL"}
    typer.echo(f"{'status':<18}{verdict[result.code]}")
    for problem in result.problems:
        typer.echo(f"  {logs.one_line(problem)}")


@db_app.command("prune")
def db_prune(
    older_than: Annotated[
        str, typer.Option(help="Age beyond which unchanged and failed fetch runs go: 90d, 12w...")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Keep the store bounded: delete old fetch runs that recorded no change. Dispatches,
    actions, attempts and the event log (the audit trail) are never pruned."""
    from etl.store import fetch_runs

    engine = open_store(database_url)
    deleted = fetch_runs.prune(engine, _duration(older_than))
    typer.echo(f"pruned {deleted} fetch runs older than {older_than}")


# typer raises click's exceptions for bad usage, and exports only some of them
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Run the command; an expected failure is one line on stderr and its exit code. `etl
    status` is a monitoring check: its own failures are CRITICAL (2), bad usage UNKNOWN (3)."""
    logs.configure(os.environ.get("ETL_LOG_FORMAT") or "text")
    try:
        code = app(standalone_mode=False)
    except EtlError as error:
        log.error("%s", error)
        raise SystemExit(error.exit_code) from None
    except ClickException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            error.show()
            raise SystemExit(0) from None
        context = getattr(error, "ctx", None)
        command = context.info_name if context is not None else None
        path = context.command_path if context is not None else "etl"
        hint = f" (see {path} --help)" if path != "etl" else ""
        message = " ".join(error.format_message().split())
        log.error("%s%s", message, hint)
        if command == "status":
            from etl.read.status import UNKNOWN

            raise SystemExit(UNKNOWN) from None
        raise SystemExit(error.exit_code) from None
    except typer.Abort:
        log.error("aborted")
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)
