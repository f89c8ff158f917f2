"""The `etl` command: parses options, calls one library function, prints the result.

Expected failures (bad configuration, API down or refusing the key, database missing or locked)
are EtlErrors: `main` prints them as one line on stderr and exits with their code.
"""

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from etl import ingest
from etl.api import VoltusClient
from etl.config import api_settings
from etl.db import check_schema, describe, make_engine
from etl.errors import EtlError
from etl.sandbox import Faults, Sandbox

app = typer.Typer(
    help="Ingest Voltus demand-response dispatches into SQLite or PostgreSQL, with a full history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # its tracebacks show local variables, such as the API key
)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

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
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing unless it fails.")]


def open_store(database_url: str | None) -> Engine:
    engine = make_engine(database_url)
    check_schema(engine)
    return engine


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create the schema, or migrate it to this version's; safe to run again."""
    from etl import migrate  # Alembic is slow to import: only this command pays for it

    engine = make_engine(database_url)
    before = migrate.current_revision(engine)
    migrate.migrate(engine)
    after = migrate.current_revision(engine)
    if before == after:
        typer.echo(f"{describe(engine.url)}: schema already at revision {after}")
    else:
        typer.echo(f"{describe(engine.url)}: schema migrated from {before or 'empty'} to {after}")


@app.command()
def fetch(
    database_url: DatabaseUrl = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    sites: Annotated[
        bool, typer.Option("--sites", help="Also refresh the account's sites (the nightly pass).")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Fetch the last 24 hours of dispatches once and record every change."""
    engine = open_store(database_url)
    client = VoltusClient(api_settings(api_url, api_key))
    summary = ingest.fetch(engine, client, include_sites=sites)
    if quiet:
        return
    typer.echo(
        f"fetch {summary.fetch_run_id}: {summary.dispatches_received} dispatches received: "
        f"{summary.dispatches_created} new, {summary.dispatches_changed} changed, "
        f"{summary.dispatches_unchanged} unchanged, {len(summary.rejected)} rejected; "
        f"{summary.sites_received} sites received; {len(summary.events)} events"
    )
    for event in summary.events:
        typer.echo(f"  {event.describe()}")


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
) -> None:
    """Serve a local emulator of the Voltus API until interrupted."""
    emulator = Sandbox(scenario, host=host, port=port, key=key)
    emulator.faults = Faults(
        statuses=list(fail or []), retry_after=retry_after, delay_seconds=delay
    )
    typer.echo(f"Voltus API emulator listening on {emulator.url}")
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        emulator.stop()


def main() -> None:
    try:
        app()
    except EtlError as error:
        typer.echo(f"etl: error: {error}", err=True)
        raise SystemExit(error.exit_code) from None
