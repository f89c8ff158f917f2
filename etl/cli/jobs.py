"""The jobs: `etl fetch`, `etl process` and `etl run` (the minutely cron job, or a loop)."""

from typing import TYPE_CHECKING, Annotated

import typer

from etl.base import logs
from etl.base.config import OUTBOX_KEEP, SANDBOX_URL, api_settings
from etl.base.errors import ApiError, ConfigError, EtlError, ExitCode
from etl.base.logs import log
from etl.cli.options import (
    ActionCommand,
    ActionWebhook,
    ActWithin,
    ApiKey,
    ApiUrl,
    ClaimTimeout,
    ControllableLoad,
    DatabaseUrl,
    DryRun,
    HandlerName,
    HandlerTimeout,
    IncludeTest,
    LeadTime,
    NotifyTest,
    NotifyUrls,
    OutboxKeep,
    Quiet,
    RetryBackoff,
    Verbose,
    Workers,
    duration,
    every_seconds,
    processor_settings,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from sqlalchemy import Engine

    from etl.act import claims, planner, processor, send_telemetry
    from etl.base.config import ApiSettings
    from etl.base.vocabulary import OutboxEndpoint
    from etl.ingest import dispatches, sources
    from etl.jobs import runner

__all__ = ["fetch", "log_outcome", "process", "run", "telemetry_collect", "telemetry_send"]


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
        str,
        typer.Option(
            metavar="DURATION", help="--telemetry: for dispatches that ended this recently."
        ),
    ] = "7d",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fetch the last 24 hours of dispatches once and record every change."""
    from etl.ingest import dispatches
    from etl.source.api import VoltusClient
    from etl.store.db import open_store

    logs.set_verbosity(verbose, quiet)
    lookback_delta = duration(lookback)
    engine = open_store(database_url)
    client = VoltusClient(api_settings(api_url, api_key))
    _log_fetch(dispatches.fetch(engine, client, include_sites=sites))
    if telemetry:
        from etl.ingest import telemetry as meter_readings

        summary = meter_readings.fetch_telemetry(engine, client, lookback_delta)
        log.info(
            "telemetry %s: %s windows, %s requests: %s readings new, %s changed, %s rejected;"
            " %s dispatch sites measured, %s left to measure",
            summary.fetch_run_id,
            summary.windows,
            summary.requests,
            summary.readings_new,
            summary.readings_changed,
            summary.rejected,
            summary.measured,
            summary.measures_due,
            extra={"fetch_run": summary.fetch_run_id},
        )
        if summary.error:
            raise ApiError(summary.error)


def _log_fetch(summary: "dispatches.FetchSummary") -> None:
    from etl.base.vocabulary import FetchKind, FetchOutcome

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


def telemetry_send(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-",
            help="Readings, a line each: CSV with a header (site_id, meter_id, timestamp, kw or "
            "kwh, interval_seconds) or JSON lines; - for standard input.",
        ),
    ],
    controllable_load: ControllableLoad = False,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    outbox_keep: OutboxKeep = OUTBOX_KEEP,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Queue readings for Voltus in the store's outbox, then send all that wait. Bad lines are
    set aside with why, the rest go on; `etl run` and `etl serve` send what is left."""

    def queue(engine: "Engine", endpoint: "OutboxEndpoint") -> "sources.Collected":
        import sys

        from etl.ingest import readings, sources

        if file == "-":
            sys.stdin.reconfigure(errors="replace")  # type: ignore[union-attr]
            lines = readings.read_lines(sys.stdin)
            return sources.Collected([(file, readings.queue_lines(engine, lines, file, endpoint))])
        try:
            with open(file, encoding="utf-8", errors="replace") as text:
                lines = readings.read_lines(text)
                summary = readings.queue_lines(engine, lines, file, endpoint)
        except OSError as error:
            raise ConfigError(f"cannot read {file}: {error.strerror}") from None
        return sources.Collected([(file, summary)])

    logs.set_verbosity(verbose, quiet)
    api = api_settings(api_url, api_key)
    _through_outbox(queue, controllable_load, database_url, api, outbox_keep)


def telemetry_collect(
    source: Annotated[
        str,
        typer.Option(
            envvar="ETL_TELEMETRY_SOURCE",
            metavar="NAME:ARGUMENT",
            help="Where readings come from: csv_folder:/path (its complete *.csv and *.jsonl "
            "files, each moved into queued/ once in the outbox, or into rejected/ if no readings) "
            "or an installed etl.telemetry_sources plug-in.",
        ),
    ],
    controllable_load: ControllableLoad = False,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    outbox_keep: OutboxKeep = OUTBOX_KEEP,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Queue what a telemetry source offers in the outbox, then send all that waits."""

    def queue(engine: "Engine", endpoint: "OutboxEndpoint") -> "sources.Collected":
        from etl.ingest import sources

        return sources.collect(engine, source, endpoint)

    logs.set_verbosity(verbose, quiet)
    api = api_settings(api_url, api_key)
    _through_outbox(queue, controllable_load, database_url, api, outbox_keep)


def _through_outbox(
    queue: "Callable[[Engine, OutboxEndpoint], sources.Collected]",
    controllable_load: bool,
    database_url: str | None,
    api: "ApiSettings",
    outbox_keep: "timedelta",
) -> None:
    """Queue readings in the store's outbox (`queue`: each batch and how it went, and what it
    left), say how each batch went and what was left, then send all that waits and say how that
    went. Exits 2 after sending if a batch was set aside as no readings: someone must see to it;
    else 1 if one could not be read now (it is tried again next time)."""
    from etl.act import send_telemetry
    from etl.base.vocabulary import OutboxEndpoint
    from etl.source.api import VoltusClient
    from etl.store.db import open_store

    engine = open_store(database_url)
    client = VoltusClient(api)
    endpoint = OutboxEndpoint.CONTROLLABLE_LOAD if controllable_load else OutboxEndpoint.TELEMETRY
    collected = queue(engine, endpoint)
    for batch, queued in collected.batches:
        log.info(
            "telemetry queued from %s: %s lines, %s new, %s corrected, %s already queued; %s "
            "set aside (%s of them before)",
            batch,
            queued.lines,
            queued.queued,
            queued.corrected,
            queued.unchanged,
            queued.rejected,
            queued.rejected_before,
        )
    for batch, why in collected.left.waiting:
        log.info("telemetry from %s waits: %s", batch, why)
    for batch, why in collected.left.rejected:
        log.error("telemetry from %s refused: %s", batch, why)
    for batch, why in collected.left.failed:
        log.error("telemetry from %s failed: %s", batch, why)
    log_sent(send_telemetry.drain(engine, client, keep=outbox_keep))
    if collected.left.rejected:
        raise typer.Exit(ExitCode.CONFIG)
    if collected.left.failed:
        raise typer.Exit(ExitCode.FAILED)


def log_sent(summary: "send_telemetry.SendSummary") -> None:
    log.info(
        "telemetry sent: %s readings in %s requests (%s split); %s refused; %s waiting; "
        "%s sent long ago pruned",
        summary.sent,
        summary.requests,
        summary.split,
        summary.refused,
        summary.waiting,
        summary.pruned,
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
            f" (episode {claimed.episode}, attempt {claimed.attempt},"
            f" key {request.idempotency_key})"
        )


def log_outcome(outcome: "runner.RunEvent") -> None:
    """One event of a long run: a fetch's, a pass's or a telemetry drain's summary, or an error
    it lived through."""
    from etl.act.send_telemetry import SendSummary
    from etl.ingest.dispatches import FetchSummary
    from etl.jobs.notify import NotifySummary

    if isinstance(outcome, EtlError):
        log.error("%s", outcome)
    elif isinstance(outcome, FetchSummary):
        _log_fetch(outcome)
    elif isinstance(outcome, SendSummary):
        log_sent(outcome)
    elif isinstance(outcome, NotifySummary):
        log.info(
            "notifications: %s planned, %s sent, %s not taken (tried again later); %s waiting",
            outcome.planned,
            outcome.sent,
            outcome.failed,
            outcome.waiting,
        )
    else:
        _log_pass(outcome)


def _exit(events: "list[runner.RunEvent]") -> None:
    """End a single run with its exit code (runner.exit_code); say so when attempts failed."""
    from etl.act.processor import PassSummary
    from etl.jobs.runner import exit_code

    code = exit_code(events)
    if code == ExitCode.ACTIONS_FAILED:
        log.error(
            "%s action attempts failed; they are retried with backoff while their dispatch is "
            "active",
            sum(event.failed for event in events if isinstance(event, PassSummary)),
        )
    if code:
        raise typer.Exit(code)


def process(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    handler: HandlerName = None,
    action_command: ActionCommand = None,
    action_webhook: ActionWebhook = None,
    claim_timeout: ClaimTimeout = None,
    retry_backoff: RetryBackoff = None,
    include_test: IncludeTest = None,
    lead_time: LeadTime = None,
    workers: Workers = None,
    handler_timeout: HandlerTimeout = None,
) -> None:
    """Act once on the stored dispatches: run every due curtail and restore."""
    from etl.act import processor
    from etl.jobs import runner
    from etl.store.db import open_store

    logs.set_verbosity(verbose, quiet)
    settings = processor_settings(ctx)  # from ctx: the options above, and those before it
    if dry_run:
        _print_dry_run(*processor.dry_run(open_store(database_url), settings))
        return
    parts = runner.build(settings, database_url, api_url or SANDBOX_URL, None)
    summary = processor.process(parts.engine, parts.handler, settings, parts.stop)
    log_outcome(summary)
    _exit([summary])


def run(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    every: Annotated[
        float | None,
        typer.Option(
            parser=every_seconds,
            metavar="SECONDS",
            help="Keep running: fetch every SECONDS (1 to 86400), act as soon as an action falls "
            "due, stop on SIGTERM or SIGINT after finishing the actions in hand.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    handler: HandlerName = None,
    action_command: ActionCommand = None,
    action_webhook: ActionWebhook = None,
    claim_timeout: ClaimTimeout = None,
    retry_backoff: RetryBackoff = None,
    include_test: IncludeTest = None,
    lead_time: LeadTime = None,
    workers: Workers = None,
    handler_timeout: HandlerTimeout = None,
    notify_urls: NotifyUrls = None,
    notify_test: NotifyTest = None,
    act_within: ActWithin = "2m",
    outbox_keep: OutboxKeep = OUTBOX_KEEP,
) -> None:
    """Fetch, then act on what is due (the minutely cron job); --every loops."""
    from etl.act import processor
    from etl.ingest import dispatches
    from etl.jobs import runner
    from etl.source.api import VoltusClient
    from etl.store.db import open_store

    logs.set_verbosity(verbose, quiet)
    settings = processor_settings(ctx)  # from ctx: the options above, and those before it
    api = api_settings(api_url, api_key)
    if dry_run and every is not None:
        raise typer.BadParameter("--dry-run runs once: drop --every")
    if dry_run:  # the fetch is real (it records what the API says); the pass is not
        engine = open_store(database_url)
        _log_fetch(dispatches.fetch(engine, VoltusClient(api)))  # it checks the store's account
        _print_dry_run(*processor.dry_run(engine, settings))
        return
    limits = None
    if settings.notify_urls:  # people are told when the status turns CRITICAL, and more
        from etl.read import status

        limits = status.Limits(status.notices_max_age(every), act_within=duration(act_within))
    parts = runner.build(settings, database_url, api.url, api, limits, outbox_keep)
    if every is not None:
        for outcome in runner.run_loop(parts, every):
            log_outcome(outcome)
        return
    events = []
    for outcome in runner.run_once(parts):
        log_outcome(outcome)
        events.append(outcome)
    _exit(events)
