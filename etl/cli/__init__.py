"""The `etl` command: parses options, calls one library function, prints the result.

Data (reports, audit, status, dry runs) goes to stdout; diagnostics (what a fetch or a pass did,
warnings, errors) are log records on stderr (etl.base.logs). Expected failures (bad configuration,
API down or refusing the key, database missing or locked) are EtlErrors: `main` logs them as one
line and exits with their code.

One module per group of commands (jobs, service, read, admin; the shared options in options);
this one says which command is which function. Each command imports the library modules it
uses: `etl --help` loads no database code, and the minutely `etl run` none of the reports', the
emulator's or Alembic's.
"""

import os
from typing import TYPE_CHECKING

import typer

from etl.base import logs
from etl.base.config import read_secret_files
from etl.base.errors import EtlError, ExitCode
from etl.base.logs import log
from etl.cli import admin, jobs, openadr, options, read, service

__all__ = ["app", "main"]

app = typer.Typer(
    rich_markup_mode=None,  # click's plain help: it wraps at the terminal's width, cutting nothing
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # its tracebacks show local variables, such as the API key
)
app.callback()(options.processor_options)


def group(name: str, help: str, short_help: str) -> typer.Typer:
    commands = typer.Typer(rich_markup_mode=None, help=help, no_args_is_help=True)
    app.add_typer(commands, name=name, short_help=short_help)
    return commands


# each command's line in `etl --help` (what fits beside its name at 80 columns, uncut)
app.command(short_help="Fetch the dispatches once and record every change.")(jobs.fetch)
app.command(short_help="Act once on what is due in the store.")(jobs.process)
app.command(short_help="Fetch, then act (the minutely job); --every loops.")(jobs.run)
app.command(short_help="Run as a service: webhooks, a poll, the console.")(service.serve)
app.command(short_help="Serve the web console alone, read-only.")(service.console)
app.command(short_help="Serve a local emulator of the Voltus API.")(service.sandbox)
app.command(short_help="Report from the SQL views (table, CSV, JSON, ics).")(read.report)
app.command("audit", short_help="What happened, in time order.")(read.audit_command)
app.command("status", short_help="Is the job healthy? (a monitoring check)")(read.status_command)
app.command(short_help="Acknowledge failed actions: who saw to them, and why.")(admin.ack)
db_app = group(
    "db", "Create, migrate and prune the database.", "Create, migrate and prune the store."
)
db_app.command("upgrade", short_help="Create the schema or migrate it.")(admin.db_upgrade)
db_app.command("current", short_help="The store's schema revision.")(admin.db_current)
db_app.command("downgrade", short_help="Migrate back to an earlier revision.")(admin.db_downgrade)
db_app.command("bind", short_help="Bind the store to this API and key.")(admin.db_bind)
db_app.command("prune", short_help="Delete old fetch runs that changed nothing.")(admin.db_prune)
db_app.command("measure", short_help="Measure the dispatch sites not yet measured.")(
    admin.db_measure
)
webhooks_app = group(
    "webhooks",
    "List, register and delete the account's Voltus webhooks (for `etl serve`).",
    "The account's Voltus webhooks.",
)
webhooks_app.command("list", short_help="The account's registrations.")(service.webhooks_list)
webhooks_app.command("register", short_help="Have Voltus POST to a URL.")(service.webhooks_register)
webhooks_app.command("delete", short_help="Stop one registration.")(service.webhooks_delete)
dispatches_app = group(
    "dispatches",
    "Have Voltus create a test dispatch (its certification's production test).",
    "Have Voltus create a test dispatch.",
)
dispatches_app.command("test", short_help="Have Voltus create a test dispatch.")(
    service.dispatches_test
)
telemetry_app = group(
    "telemetry",
    "Send readings to Voltus through the outbox.",
    "Send readings to Voltus through the outbox.",
)
telemetry_app.command("send", short_help="Queue readings from a file, then send.")(
    jobs.telemetry_send
)
telemetry_app.command("collect", short_help="Queue readings from a source, then send.")(
    jobs.telemetry_collect
)
openadr_app = group(
    "openadr",
    "The OpenADR 2.0b VTN bridge (the openadr extra): VENs act for sites.",
    "An OpenADR 2.0b VTN: VENs act for sites.",
)
openadr_app.command("serve", short_help="Serve the VTN and act through it.")(openadr.serve)

if TYPE_CHECKING:
    from click import ClickException
else:  # the class typer raises: click's, or since typer 0.28 its own copy of it
    ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Run the command; an expected failure is one line on stderr and its exit code. `etl
    status` is a monitoring check: its own failures are CRITICAL (2), bad usage UNKNOWN (3)."""
    logs.configure(os.environ.get("ETL_LOG_FORMAT") or "text")
    try:
        read_secret_files(os.environ)
        code = app(standalone_mode=False)
    except EtlError as error:
        log.error("%s", error)
        raise SystemExit(error.exit_code) from None
    except ClickException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            error.show()
            raise SystemExit(ExitCode.OK) from None
        context = getattr(error, "ctx", None)
        command = context.info_name if context is not None else None
        path = context.command_path if context is not None else "etl"
        hint = f" (see {path} --help)" if path != "etl" else ""
        message = " ".join(error.format_message().split())
        log.error("%s%s", message, hint)
        if command == "status":
            from etl.read.status import Health

            raise SystemExit(Health.UNKNOWN) from None
        raise SystemExit(error.exit_code) from None
    except typer.Abort:
        log.error("aborted")
        raise SystemExit(ExitCode.FAILED) from None
    raise SystemExit(code if isinstance(code, int) else ExitCode.OK)
