"""`etl db`: create and migrate the schema, bind the store to an account, prune old fetch runs;
and `etl ack`: a person's word that failed actions were seen to."""

from typing import Annotated

import typer

from etl.base.config import api_settings
from etl.cli.options import ApiKey, ApiUrl, DatabaseUrl, duration

__all__ = ["ack", "db_bind", "db_current", "db_downgrade", "db_prune", "db_upgrade"]


def db_upgrade(
    database_url: DatabaseUrl = None,
    sql: Annotated[
        bool,
        typer.Option(
            "--sql",
            help="Print the SQL that would migrate this PostgreSQL store instead, for a DBA to "
            "apply by hand; change nothing.",
        ),
    ] = False,
) -> None:
    """Create the schema, or migrate it to this version's; safe to run again."""
    from etl.store import migrate  # Alembic is slow to import: only the db commands pay for it
    from etl.store.db import describe, make_engine

    if sql:
        typer.echo(migrate.upgrade_sql(make_engine(database_url, create=False)), nl=False)
        return
    engine = make_engine(database_url)
    before, after = migrate.migrate(engine)
    if before == after:
        typer.echo(f"{describe(engine.url)}: schema already at revision {after}")
    else:
        typer.echo(f"{describe(engine.url)}: schema migrated from {before or 'empty'} to {after}")


def db_current(database_url: DatabaseUrl = None) -> None:
    """The store's schema revision, and whether it is the one this etl needs."""
    from etl.store import migrate
    from etl.store.db import SCHEMA_REVISION, describe, make_engine

    engine = make_engine(database_url, create=False)
    current = migrate.current_revision(engine)
    if current == SCHEMA_REVISION:
        verdict = "this etl's"
    else:
        verdict = f"this etl needs {SCHEMA_REVISION}: run etl db upgrade"
    typer.echo(f"{describe(engine.url)}: schema at revision {current or 'none'} ({verdict})")


def db_downgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="The revision to go back to, e.g. 0021.")
    ],
    database_url: DatabaseUrl = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False,
) -> None:
    """Migrate the schema back to an earlier revision (before going back to an older etl); what
    the later revisions added is dropped."""
    from etl.store import migrate
    from etl.store.db import describe, make_engine

    engine = make_engine(database_url, create=False)
    current = migrate.current_revision(engine)
    migrate.check_downgrade(current, revision)
    if not yes:
        typer.confirm(
            f"{describe(engine.url)}: go back from revision {current} to {revision}, dropping "
            "what the later revisions added?",
            abort=True,
        )
    before, after = migrate.migrate(engine, revision, downgrade=True)
    typer.echo(f"{describe(engine.url)}: schema migrated back from {before} to {after}")


def db_bind(
    database_url: DatabaseUrl = None, api_url: ApiUrl = None, api_key: ApiKey = None
) -> None:
    """Make the store serve this API and key from now on: after a key rotation, or to move it
    to another API on purpose (recorded as a `store_bound` event)."""
    from etl.store import binding
    from etl.store.db import open_store

    api = api_settings(api_url, api_key)
    before, after = binding.bind(open_store(database_url), api)
    if before is None:
        typer.echo(f"store bound to the Voltus API at {after.api_origin}")
    elif before.api_origin != after.api_origin:
        typer.echo(f"store moved from the Voltus API at {before.api_origin} to {after.api_origin}")
    else:
        typer.echo(f"store bound to a new key for the Voltus API at {after.api_origin}")


def db_prune(
    older_than: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Age beyond which unchanged and failed fetch runs go: 90d, 12w and so on.",
        ),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Keep the store bounded: delete old fetch runs that recorded no change. Dispatches,
    actions, attempts and the event log (the audit trail) are never pruned."""
    from etl.store import fetch_runs
    from etl.store.db import open_store

    engine = open_store(database_url)
    deleted = fetch_runs.prune(engine, duration(older_than))
    typer.echo(f"pruned {deleted} fetch runs older than {older_than}")


def db_measure(database_url: DatabaseUrl = None) -> None:
    """Measure every dispatch site due (no measure kept of its metered response), newest
    first: once after upgrading a store from before revision 0029, whose history was measured
    at each read; `etl fetch --telemetry` measures what it brings. A chunk of sites a
    transaction: stopped, it goes on from there next time."""
    from etl.ingest import measures
    from etl.store.db import open_store

    engine = open_store(database_url)
    try:
        measured, _ = measures.measure_due(engine)
    finally:
        engine.dispose()  # run in a test's process too: no connection left behind
    typer.echo(f"measured {measured} dispatch sites; none left to measure")


def ack(
    reason: Annotated[
        str,
        typer.Option(
            metavar="WHY", help="What was done about them (required).", show_default=False
        ),
    ],
    by: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Who saw to it.  [default: the login name]"),
    ] = None,
    dispatch: Annotated[
        str | None, typer.Option(metavar="ID", help="Only this dispatch's actions.")
    ] = None,
    site: Annotated[
        str | None, typer.Option(metavar="ID", help="Only this site's actions.")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every one of the window (without --dispatch, --site).")
    ] = False,
    window: Annotated[
        str, typer.Option(metavar="DURATION", help="Actions that ended this recently.")
    ] = "24h",
    database_url: DatabaseUrl = None,
) -> None:
    """Acknowledge the actions that ended failed or missed (of --dispatch, --site, or --all):
    recorded as events with who and why, they stop counting in `etl status`. One still failing
    is not."""
    import getpass

    from etl.act.acknowledge import Acknowledgement, acknowledge
    from etl.read import audit
    from etl.store.db import open_store

    if not (dispatch or site or every):  # no sweep of failures that no one looked at
        raise typer.BadParameter("name a --dispatch or a --site, or say --all")
    try:
        who = by if by is not None else getpass.getuser()
    except (KeyError, OSError):  # a container's user without a name
        raise typer.BadParameter("no login name to record: give --by") from None
    engine = open_store(database_url)
    try:
        audit.require_known(engine, audit.AuditQuery(dispatch, site))
        seen = acknowledge(engine, Acknowledgement(who, reason, dispatch, site), duration(window))
    finally:
        engine.dispose()  # run in a test's process too: no connection left behind
    for found in seen:
        typer.echo(
            f"acknowledged: {found.kind} of site {found.site_id} for dispatch "
            f"{found.dispatch_id} ({found.state})"
        )
    if not seen:
        typer.echo("nothing to acknowledge: no action of the window ended failed or missed unseen")
