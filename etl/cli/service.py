"""The service and what surrounds it: `etl serve`, `etl webhooks`, `etl dispatches test`, the
emulator `etl sandbox`."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from etl.base import logs
from etl.base.config import OUTBOX_KEEP, api_settings
from etl.base.errors import ApiError
from etl.cli.jobs import log_outcome
from etl.cli.options import (
    ActionCommand,
    ActionWebhook,
    ActWithin,
    ApiKey,
    ApiUrl,
    ClaimTimeout,
    DatabaseUrl,
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
    number_between,
    processor_settings,
    start_moment,
)

if TYPE_CHECKING:
    from etl.source.api import Webhook

__all__ = [
    "console",
    "dispatches_test",
    "sandbox",
    "serve",
    "webhooks_delete",
    "webhooks_list",
    "webhooks_register",
]

ConsolePassword = Annotated[
    str | None,
    typer.Option(
        envvar="ETL_CONSOLE_PASSWORD",
        metavar="PASSWORD",
        help="The console's password (HTTP Basic, any user name); without it the console is "
        "served on a loopback address only.",
        show_default=False,
    ),
]
CalendarToken = Annotated[
    str | None,
    typer.Option(
        envvar="ETL_CALENDAR_TOKEN",
        metavar="TOKEN",
        help="Serve the calendar at /calendar/TOKEN.ics too, without the password: the address "
        "a calendar app subscribes to (Google and Outlook cannot send one).",
        show_default=False,
    ),
]
MaxAge = Annotated[
    str, typer.Option(metavar="DURATION", help="Health shown: as `etl status --max-age`.")
]
Window = Annotated[
    str, typer.Option(metavar="DURATION", help="Health shown: as `etl status --window`.")
]


def serve(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    every: Annotated[
        float,
        typer.Option(
            parser=every_seconds,
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
            metavar="TOKEN",
            help="The webhook's path becomes /voltus/webhook/TOKEN, and any other is 404; "
            "required to listen beyond loopback.",
            show_default=False,
        ),
    ] = None,
    console_password: ConsolePassword = None,
    calendar_token: CalendarToken = None,
    console: Annotated[
        bool,
        typer.Option(
            "--console/--no-console",
            envvar="ETL_CONSOLE",
            show_default=False,
            help="Serve the console too (/console/ and /calendar.ics), and the verdict at "
            "/status; --no-console (or ETL_CONSOLE=off): the webhook, /healthz and /metrics "
            "alone.",
        ),
    ] = True,
    max_age: MaxAge = "5m",
    window: Window = "24h",
    act_within: ActWithin = "2m",
    outbox_keep: OutboxKeep = OUTBOX_KEEP,
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
) -> None:
    """Run as a service: everything `etl run --every` does, and act within a second on Voltus's
    webhooks; stop on SIGTERM or SIGINT after finishing the actions in hand."""
    from etl import serve as service
    from etl.jobs import runner
    from etl.read import status

    logs.set_verbosity(verbose, quiet)
    settings = processor_settings(ctx)  # from ctx: the options above, and those before it
    api = api_settings(api_url, api_key)
    where = service.listener(listen, token, console_password, console, calendar_token)
    limits = status.Limits(duration(max_age), duration(window), duration(act_within))
    # people are told (ETL_NOTIFY_URLS) when the status as judged by these turns CRITICAL
    parts = runner.build(settings, database_url, api.url, api, limits, outbox_keep)
    service.serve(parts, every, where, limits, log_outcome)


def console(
    database_url: DatabaseUrl = None,
    listen: Annotated[
        str,
        typer.Option(
            envvar="ETL_LISTEN",
            metavar="HOST:PORT",
            help="Where to serve the console (port 0: any free one).",
        ),
    ] = "127.0.0.1:8080",
    console_password: ConsolePassword = None,
    calendar_token: CalendarToken = None,
    max_age: MaxAge = "5m",
    window: Window = "24h",
    act_within: ActWithin = "2m",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Serve the web console alone (read-only: no fetch, no action, no API key needed) at
    /console/, with /calendar.ics; stop on SIGTERM or SIGINT."""
    from etl import serve as service
    from etl.jobs.runner import stop_on_signals
    from etl.read import status
    from etl.store.db import open_store

    logs.set_verbosity(verbose, quiet)
    where = service.console_listener(listen, console_password, calendar_token)
    engine = open_store(database_url)
    limits = status.Limits(duration(max_age), duration(window), duration(act_within))
    service.serve_console(engine, where, limits, stop_on_signals())


def webhooks_list(api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """The account's registrations: id, URL (its secrets masked) and events."""
    from etl.source.api import VoltusClient

    registered = VoltusClient(api_settings(api_url, api_key)).webhooks()
    for webhook in registered:
        typer.echo(_describe_webhook(webhook))
    if not registered:
        typer.echo("(no webhooks)")


def webhooks_register(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL", help="Where Voltus will POST: https://HOST/voltus/webhook/TOKEN."
        ),
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


def dispatches_test(
    start: Annotated[
        datetime,
        typer.Option(
            parser=start_moment,
            metavar="TIME",
            help="When it starts: now, +30m (that long from now) or an ISO time such as "
            "2024-02-02T09:00Z (UTC unless it says otherwise), within 72 hours.",
        ),
    ],
    length: Annotated[
        timedelta,
        typer.Option(
            "--duration", parser=duration, metavar="DURATION", help="How long it lasts: 30m, 2h."
        ),
    ],
    program: Annotated[
        int | None,
        typer.Option(
            metavar="ID",
            help="The program whose registered sites it names; Voltus's test program if none.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Go ahead against an API other than a sandbox.")
    ] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Have Voltus create a test dispatch (test=true), as its certification asks of a production
    integration: it starts within 72 hours and appears in the listing."""
    from etl.base.timeutil import format_rfc3339, utcnow
    from etl.source import create_test_dispatch
    from etl.source.api import VoltusClient

    client = VoltusClient(api_settings(api_url, api_key))
    sent = create_test_dispatch.create(client, start, length, utcnow(), program, confirmed=yes)
    typer.echo(
        f"created a test dispatch from {format_rfc3339(sent.start)} to {format_rfc3339(sent.end)}"
        f" (program {sent.program_id if sent.program_id is not None else 'test'}): the next fetch"
        " lists it"
    )


def _describe_webhook(webhook: "Webhook") -> str:
    from etl.base.redact import redact_url

    return logs.one_line(f"{webhook.id}  {redact_url(webhook.url)}  {', '.join(webhook.events)}")


def sandbox(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to listen on; 0 picks a free one.")
    ] = 8787,
    scenario: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Scenario JSON file; default: a built-in one around the current time.",
        ),
    ] = None,
    key: Annotated[str, typer.Option(metavar="KEY", help="The API key it accepts.")] = "secret",
    fail: Annotated[
        list[int] | None,
        typer.Option(
            metavar="STATUS",
            help="Answer the next request with this status (repeat for several).",
        ),
    ] = None,
    retry_after: Annotated[
        str | None,
        typer.Option(metavar="VALUE", help="Retry-After header sent with each injected 429."),
    ] = None,
    delay: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds to wait before each response.")
    ] = 0.0,
    certification: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Replay one of Voltus's integration tests instead: basic, ancillary, "
            "two-programs, cancelled or curtailing.",
            show_default=False,
        ),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            parser=number_between(0.01, 10000, "a speed"),
            metavar="FACTOR",
            help="Replay the scenario's relative times this many times faster.",
        ),
    ] = 1.0,
    sites: Annotated[
        str | None,
        typer.Option(
            metavar="ID,ID...",
            help="Your own site ids: the scenario's dispatches name them instead of its own.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a local emulator of the Voltus API until interrupted."""
    from etl.sandbox.emulator import Faults, Sandbox, certification_scenario

    if certification is not None:
        if scenario is not None:
            raise typer.BadParameter("give --scenario or --certification, not both")
        scenario = certification_scenario(certification)
    site_ids = [s.strip() for s in sites.split(",")] if sites is not None else None
    emulator = Sandbox(scenario, host=host, port=port, key=key, speed=speed, site_ids=site_ids)
    emulator.faults = Faults(
        statuses=list(fail or []), retry_after=retry_after, delay_seconds=delay
    )
    typer.echo(f"Voltus API emulator listening on {emulator.url}")
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        emulator.stop()
