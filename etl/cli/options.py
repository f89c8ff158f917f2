"""What the commands share: their options, the parsers of times, durations and numbers, and the
global options that configure the processor (`etl --workers 8 run`)."""

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated

import typer

from etl import __version__
from etl.base.config import ProcessorSettings
from etl.base.timeutil import TimeShift, parse_duration, parse_moment, time_shift, utcnow

__all__ = [
    "ApiKey",
    "ApiUrl",
    "ControllableLoad",
    "DatabaseUrl",
    "DryRun",
    "Quiet",
    "Since",
    "Tz",
    "Until",
    "Verbose",
    "duration",
    "every_seconds",
    "number_between",
    "processor_options",
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
    """`now`, `+30m` (that long from now) or an ISO time."""
    try:
        if value == "now":
            return utcnow()
        if value.startswith("+"):
            return utcnow() + parse_duration(value[1:])
        return parse_moment(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def duration(value: str) -> timedelta:
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


Tz = Annotated[
    str,
    typer.Option(
        "--tz",
        metavar="ZONE",
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
            metavar="NAME",
            help="log, command, webhook, or an `etl.handlers` entry point; default: command if "
            "ETL_ACTION_COMMAND is set, webhook if ETL_ACTION_WEBHOOK is, else log.",
        ),
    ] = None,
    action_command: Annotated[
        str | None,
        typer.Option(
            envvar="ETL_ACTION_COMMAND", metavar="PROGRAM", help="Program run once per action."
        ),
    ] = None,
    action_webhook: Annotated[
        str | None,
        typer.Option(
            envvar="ETL_ACTION_WEBHOOK",
            metavar="URL",
            help="URL that receives one POST per action.",
        ),
    ] = None,
    claim_timeout: Annotated[
        float,
        typer.Option(
            envvar="ETL_CLAIM_TIMEOUT_SECONDS",
            metavar="SECONDS",
            help="Seconds before an unfinished claim (its process died) is taken over.",
        ),
    ] = 300.0,
    retry_backoff: Annotated[
        float,
        typer.Option(
            envvar="ETL_RETRY_BACKOFF_SECONDS",
            metavar="SECONDS",
            help="First retry of a failed action after this, then doubling (at most 1 hour).",
        ),
    ] = 30.0,
    include_test: Annotated[
        bool,
        typer.Option(
            envvar="ETL_INCLUDE_TEST",
            show_default=False,
            help="Run the handler for test dispatches too.",
        ),
    ] = False,
    lead_time: Annotated[
        float,
        typer.Option(
            envvar="ETL_LEAD_TIME_SECONDS",
            metavar="SECONDS",
            help="Curtail this long before start_time.",
        ),
    ] = 0.0,
    workers: Annotated[
        int,
        typer.Option(
            envvar="ETL_WORKERS", metavar="N", help="Handler calls at once in one process."
        ),
    ] = 32,
    handler_timeout: Annotated[
        float,
        typer.Option(
            envvar="ETL_HANDLER_TIMEOUT_SECONDS",
            metavar="SECONDS",
            help="Time limit of one command or webhook call; shorter than the claim timeout.",
        ),
    ] = 60.0,
    notify_urls: Annotated[
        str | None,
        typer.Option(
            envvar="ETL_NOTIFY_URLS",
            metavar="URLS",
            show_default=False,
            help="Apprise URLs (Slack, Teams, e-mail, ntfy...), separated by commas or spaces: "
            "where people are told of dispatches and failed actions. Secret: never shown.",
        ),
    ] = None,
    notify_test: Annotated[
        bool,
        typer.Option(
            envvar="ETL_NOTIFY_TEST",
            show_default=False,
            help="Tell of test dispatches created too.",
        ),
    ] = False,
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
        notify_urls=notify_urls or None,
        notify_test=notify_test,
    )
