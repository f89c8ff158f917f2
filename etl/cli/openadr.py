"""`etl openadr serve`: the OpenADR 2.0b VTN bridge (the `openadr` extra; docs/openadr.md).
OpenLEADR and aiohttp are imported by the command alone."""

from pathlib import Path
from typing import Annotated

import typer

from etl.base import logs
from etl.base.config import OUTBOX_KEEP, api_settings
from etl.base.errors import ConfigError
from etl.cli.jobs import log_outcome
from etl.cli.options import (
    ApiKey,
    ApiUrl,
    ClaimTimeout,
    DatabaseUrl,
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
    every_seconds,
    processor_settings,
)

__all__ = ["serve"]


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:8081
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise typer.BadParameter(
            f"not HOST:PORT: {listen[:80]!r} (e.g. 127.0.0.1:8081)", param_hint="--listen"
        )
    return host, int(port)


def serve(
    ctx: typer.Context,
    mapping: Annotated[
        Path,
        typer.Option(
            metavar="FILE",
            help="The mapping file (TOML): which VEN, and which of its resources, act for each "
            "site (docs/openadr.md).",
            show_default=False,
        ),
    ],
    listen: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT",
            help="Where VENs reach the VTN, on loopback (behind a TLS proxy); port 0: any free "
            "one.",
        ),
    ] = "127.0.0.1:8081",
    vtn_id: Annotated[
        str,
        typer.Option(metavar="ID", help="The VTN's id, as VENs are told it."),
    ] = "ETL",
    poll_every: Annotated[
        int,
        typer.Option(
            min=1,
            max=3600,
            metavar="SECONDS",
            help="How often VENs are asked to poll (1 to 3600): an event's delay at most; "
            "shorter than the handler timeout.",
        ),
    ] = 10,
    every: Annotated[
        float,
        typer.Option(
            parser=every_seconds, metavar="SECONDS", help="Fetch every SECONDS (1 to 86400)."
        ),
    ] = 30.0,
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    outbox_keep: OutboxKeep = OUTBOX_KEEP,
    quiet: Quiet = False,
    verbose: Verbose = False,
    claim_timeout: ClaimTimeout = None,
    retry_backoff: RetryBackoff = None,
    include_test: IncludeTest = None,
    lead_time: LeadTime = None,
    workers: Workers = None,
    handler_timeout: HandlerTimeout = None,
    notify_urls: NotifyUrls = None,
    notify_test: NotifyTest = None,
) -> None:
    """Serve an OpenADR 2.0b VTN for the mapped VENs, and act on dispatches through it: `etl run
    --every` with the `openadr` handler. Stop on SIGTERM or SIGINT."""
    try:
        from etl.devices.openadr_service import serve as serve_openadr
        from etl.devices.openadr_vtn import VtnSettings
    except ModuleNotFoundError as error:  # the extra is not installed
        raise ConfigError(
            f"etl openadr needs {error.name}", "pip install 'dispatch-etl[openadr]'"
        ) from None

    logs.set_verbosity(verbose, quiet)
    settings = processor_settings(ctx)
    api = api_settings(api_url, api_key)
    host, port = _address(listen)
    vtn = VtnSettings(vtn_id=vtn_id, host=host, port=port, poll_seconds=poll_every)
    serve_openadr(mapping, vtn, settings, database_url, api, every, outbox_keep, log_outcome)
