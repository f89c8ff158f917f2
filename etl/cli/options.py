"""What the commands share: their options, the parsers of times, durations and numbers, and the
options that configure the processor, before the command or after it (`etl --workers 8 run`,
`etl run --workers 8`)."""

import math
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import available_timezones

import typer

from etl import __version__
from etl.base.config import ProcessorSettings
from etl.base.timeutil import TimeShift, parse_duration, parse_moment, time_shift, utcnow

__all__ = [
    "ActionCommand",
    "ActionWebhook",
    "ApiKey",
    "ApiUrl",
    "ClaimTimeout",
    "ControllableLoad",
    "DatabaseUrl",
    "DryRun",
    "HandlerName",
    "HandlerTimeout",
    "IncludeTest",
    "LeadTime",
    "NotifyTest",
    "NotifyUrls",
    "OutboxKeep",
    "Quiet",
    "RetryBackoff",
    "Since",
    "Tz",
    "Until",
    "Verbose",
    "Workers",
    "complete_zone",
    "duration",
    "every_seconds",
    "number_between",
    "processor_options",
    "processor_settings",
    "time_shift_option",
]

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="ETL_DATABASE_URL",
        metavar="URL",
        help="SQLAlchemy URL; default sqlite:///$XDG_DATA_HOME/etl/etl.db "
        "(~/.local/share/etl/etl.db), or under systemd sqlite:///$STATE_DIRECTORY/etl.db.",
        show_default=False,
    ),
]
# a status threshold that `etl status`, and the notifier and /status of `etl run` and `etl serve`,
# judge alike
ActWithin = Annotated[
    str,
    typer.Option(
        envvar="ETL_ACT_WITHIN",
        metavar="DURATION",
        help="CRITICAL when a site is still not curtailed (or restored) this long after its "
        "action fell due; WARNING from its first failed attempt.",
    ),
]
# how long the telemetry outbox keeps the readings sent: each drain prunes those sent before
OutboxKeep = Annotated[
    timedelta,
    typer.Option(
        parser=lambda value: duration(value),
        envvar="ETL_OUTBOX_KEEP",
        metavar="DURATION",
        help="How long the telemetry outbox keeps a reading once sent, as the record of what "
        "Voltus took: each send prunes those sent before (35d, 12w and so on).",
        show_default="35d",
    ),
]
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="VOLTUS_API_URL",
        metavar="URL",
        help="Voltus API base URL; default https://sandbox.voltus.co.",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="VOLTUS_API_KEY",
        metavar="KEY",
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
ControllableLoad = Annotated[
    bool,
    typer.Option(
        "--controllable-load",
        help="The readings are controllable load (site_id, timestamp, kw), not metered.",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the actions that a pass would run now; record, claim and run nothing.",
    ),
]


def moment(value: str | None) -> datetime | None:
    try:
        return None if value is None else parse_moment(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def start_moment(value: str) -> datetime:
    """`now`, `+30m` (that long from now) or an ISO time: a start to come. A bare duration, which
    means that long ago everywhere else, is refused rather than read as a time past."""
    forms = "now, +30m (that long from now) or an ISO time such as 2024-02-02T09:00Z"
    try:
        if value == "now":
            return utcnow()
        if value.startswith("+"):
            return utcnow() + parse_duration(value[1:])
        if value[-1:].isalpha() and value[:-1].isascii() and value[:-1].isdigit():
            raise ValueError(f"{value[:40]!r} would be a time past")
        return parse_moment(value)
    except ValueError as error:
        # the forms of a start, not parse_moment's (whose "24h" is refused here)
        reason = str(error).split(" (use ")[0]
        raise typer.BadParameter(f"{reason}: a start is {forms}") from None


def duration(value: str | timedelta) -> timedelta:
    if isinstance(value, timedelta):  # an option's default
        return value
    try:
        return parse_duration(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


Since = Annotated[
    datetime | None,
    typer.Option(
        parser=moment,
        metavar="TIME",
        help="From this time: 2024-02-01, 2024-02-01T09:00Z (UTC unless an offset is given), "
        "or 24h, 7d for that long ago.",
    ),
]
Until = Annotated[
    datetime | None,
    typer.Option(parser=moment, metavar="TIME", help="Before this time (same forms as --since)."),
]


def complete_zone(incomplete: str) -> list[str]:
    """The choices of --tz that start with what was typed: the named ones, then the IANA zones
    (read only when the shell asks)."""
    choices = ["utc", "local", "program", *sorted(available_timezones())]
    return [choice for choice in choices if choice.startswith(incomplete)]


Tz = Annotated[
    str,
    typer.Option(
        "--tz",
        metavar="ZONE",
        autocompletion=complete_zone,
        help="Show times in utc, local (this machine's zone), program (each dispatch's program's "
        "zone) or an IANA zone such as America/Chicago; each with its offset.",
    ),
]


def time_shift_option(choice: str) -> TimeShift:
    try:
        return time_shift(choice)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--tz") from None


def number_between(low: float, high: float, what: str) -> Callable[[str], float]:
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


every_seconds = number_between(1, 86400, "a number of seconds")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"etl {__version__}")
        raise typer.Exit()


# The processor's options, each None unless given: ProcessorSettings holds their defaults. The
# callback takes them before the command (`etl --workers 8 run`), and the commands that act take
# them after it (`etl run --workers 8`), as an operator types them.
HandlerName = Annotated[
    str | None,
    typer.Option(
        "--handler",
        envvar="ETL_HANDLER",
        metavar="NAME",
        help="log, command, webhook, or an `etl.handlers` entry point; default: command if "
        "ETL_ACTION_COMMAND is set, webhook if ETL_ACTION_WEBHOOK is, else log.",
    ),
]
ActionCommand = Annotated[
    str | None,
    typer.Option(
        "--action-command",
        envvar="ETL_ACTION_COMMAND",
        metavar="PROGRAM",
        help="Program run once per action.",
    ),
]
ActionWebhook = Annotated[
    str | None,
    typer.Option(
        "--action-webhook",
        envvar="ETL_ACTION_WEBHOOK",
        metavar="URL",
        help="URL that receives one POST per action.",
    ),
]
ClaimTimeout = Annotated[
    float | None,
    typer.Option(
        "--claim-timeout",
        envvar="ETL_CLAIM_TIMEOUT_SECONDS",
        metavar="SECONDS",
        help="Seconds before an unfinished claim (its process died) is taken over; default "
        f"{ProcessorSettings.claim_timeout:g}.",
    ),
]
RetryBackoff = Annotated[
    float | None,
    typer.Option(
        "--retry-backoff",
        envvar="ETL_RETRY_BACKOFF_SECONDS",
        metavar="SECONDS",
        help="First retry of a failed action after this, then doubling (at most 1 hour); "
        f"default {ProcessorSettings.retry_backoff:g}.",
    ),
]
IncludeTest = Annotated[
    bool | None,
    typer.Option(
        "--include-test/--no-include-test",
        envvar="ETL_INCLUDE_TEST",
        show_default=False,
        help="Run the handler for test dispatches too.",
    ),
]
LeadTime = Annotated[
    float | None,
    typer.Option(
        "--lead-time",
        envvar="ETL_LEAD_TIME_SECONDS",
        metavar="SECONDS",
        help=f"Curtail this long before start_time; default {ProcessorSettings.lead_time:g}.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        envvar="ETL_WORKERS",
        metavar="N",
        help=f"Handler calls at once in one process; default {ProcessorSettings.workers}.",
    ),
]
HandlerTimeout = Annotated[
    float | None,
    typer.Option(
        "--handler-timeout",
        envvar="ETL_HANDLER_TIMEOUT_SECONDS",
        metavar="SECONDS",
        help="Time limit of one command or webhook call; shorter than the claim timeout; "
        f"default {ProcessorSettings.handler_timeout:g}.",
    ),
]
NotifyUrls = Annotated[
    str | None,
    typer.Option(
        "--notify-urls",
        envvar="ETL_NOTIFY_URLS",
        metavar="URLS",
        show_default=False,
        help="Apprise URLs (Slack, Teams, e-mail, ntfy...), separated by commas or spaces: "
        "where people are told of dispatches and failed actions. Secret: never shown.",
    ),
]
NotifyTest = Annotated[
    bool | None,
    typer.Option(
        "--notify-test/--no-notify-test",
        envvar="ETL_NOTIFY_TEST",
        show_default=False,
        help="Tell of test dispatches created too.",
    ),
]


def processor_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print etl's version."
        ),
    ] = False,
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
    """Ingest Voltus dispatches into SQLite or PostgreSQL, and act on each exactly once.

    The options here configure `etl process`, `etl run` and `etl serve`: give them before the
    command (`etl --workers 8 run`) or after it (`etl run --workers 8`), or as their environment
    variables."""
    # processor_settings reads them from the context, when a command needs them: so a bad
    # setting fails only the commands that use it


def processor_settings(ctx: typer.Context) -> ProcessorSettings:
    """The processor's settings: each as given after the command, else before it (or by its
    environment variable), else ProcessorSettings' default."""
    names = {field.name for field in fields(ProcessorSettings)}
    before = ctx.find_root().params
    given = {name: value for name, value in before.items() if name in names and value is not None}
    for name, value in ctx.params.items():
        # the command reads the environment variable too: it must not override what was typed
        # before the command (click's ParameterSource, by name: click is typer's to import)
        source = ctx.get_parameter_source(name)
        if name in names and source is not None and source.name == "COMMANDLINE":
            given[name] = value
    return ProcessorSettings(**given)
