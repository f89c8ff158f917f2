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

import typer

from etl.base import logs
from etl.base.config import read_secret_files
from etl.base.errors import EtlError, ExitCode
from etl.base.logs import log
from etl.cli import admin, jobs, options, read, service

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # its tracebacks show local variables, such as the API key
)
app.callback()(options.processor_options)
db_app = typer.Typer(help="Create, migrate and prune the database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
webhooks_app = typer.Typer(
    help="List, register and delete the account's Voltus webhooks (for `etl serve`).",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")
dispatches_app = typer.Typer(
    help="Have Voltus create a test dispatch (its certification's production test).",
    no_args_is_help=True,
)
app.add_typer(dispatches_app, name="dispatches")
telemetry_app = typer.Typer(
    help="Send readings to Voltus through the outbox.", no_args_is_help=True
)
app.add_typer(telemetry_app, name="telemetry")

db_app.command("upgrade")(admin.db_upgrade)
db_app.command("current")(admin.db_current)
db_app.command("downgrade")(admin.db_downgrade)
db_app.command("bind")(admin.db_bind)
app.command()(jobs.fetch)
app.command()(jobs.process)
app.command()(jobs.run)
app.command()(service.serve)
app.command()(service.console)
webhooks_app.command("list")(service.webhooks_list)
webhooks_app.command("register")(service.webhooks_register)
webhooks_app.command("delete")(service.webhooks_delete)
dispatches_app.command("test")(service.dispatches_test)
telemetry_app.command("send")(jobs.telemetry_send)
telemetry_app.command("collect")(jobs.telemetry_collect)
app.command()(service.sandbox)
app.command()(read.report)
app.command("audit")(read.audit_command)
app.command("status")(read.status_command)
db_app.command("prune")(admin.db_prune)

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
