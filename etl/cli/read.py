"""For people and monitoring: `etl report`, `etl audit` (and its chart) and `etl status`."""

import json
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from etl.base import logs
from etl.base.errors import EtlError
from etl.base.logs import log
from etl.base.timeutil import format_rfc3339
from etl.cli.options import (
    ActWithin,
    DatabaseUrl,
    Since,
    Tz,
    Until,
    duration,
    number_between,
    time_shift_option,
)

if TYPE_CHECKING:
    from etl.read import metrics, status

__all__ = ["audit_command", "report", "status_command"]


class ReportKind(StrEnum):
    dispatches = "dispatches"
    sites = "sites"
    programs = "programs"
    curtailments = "curtailments"
    performance = "performance"


class Period(StrEnum):
    day = "day"
    month = "month"


def _complete_format(incomplete: str) -> list[str]:
    """Every format, ics too: the shell asks before KIND is parsed (`report dispatches --format`
    leaves it unread), and `etl report sites --format ics` is refused in one line anyway."""
    from etl.read import output

    return [fmt for fmt in (*output.FORMATS, "ics") if fmt.startswith(incomplete)]


def report(
    kind: Annotated[
        ReportKind,
        typer.Argument(
            metavar="KIND",
            help="dispatches: one row per dispatch with its counts and outcome; sites: committed "
            "kW per site per day or month (--by); programs: one row per program; curtailments: "
            "one row per action; performance: one row per dispatch and site, the metered "
            "response (etl fetch --telemetry).",
        ),
    ],
    database_url: DatabaseUrl = None,
    since: Since = None,
    until: Until = None,
    program: Annotated[
        int | None,
        typer.Option(metavar="ID", help="Only this program (its id).", min=-(2**31), max=2**31 - 1),
    ] = None,
    site: Annotated[
        str | None, typer.Option(metavar="ID", help="Only dispatches with this site (its id).")
    ] = None,
    test: Annotated[
        bool | None,
        typer.Option("--test/--no-test", help="Only test dispatches, or only the others."),
    ] = None,
    by: Annotated[Period, typer.Option(help="sites: per day or per month.")] = Period.day,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            autocompletion=_complete_format,
            help="table, csv, json (an array) or jsonl; for dispatches also ics (a calendar).",
        ),
    ] = "table",
    tz: Tz = "utc",
    columns: Annotated[
        str | None,
        typer.Option(
            metavar="NAME,NAME...",
            help="Only these columns, in this order (`--format csv` heads them all).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Report on dispatches, sites, programs, curtailments or performance, from the SQL
    views."""
    from etl.read import output, reports
    from etl.store.db import open_store

    formats = (*output.FORMATS, "ics") if kind == ReportKind.dispatches else output.FORMATS
    if fmt not in formats:
        raise typer.BadParameter(f"use one of {', '.join(formats)}", param_hint="--format")
    shift = time_shift_option(tz)
    engine = open_store(database_url)
    f = reports.ReportFilter(since=since, until=until, program_id=program, site_id=site, test=test)
    if fmt == "ics":
        if columns is not None:
            raise typer.BadParameter("a calendar has no columns: drop --columns")
        from etl.base.timeutil import utcnow
        from etl.read import calendar

        sys.stdout.buffer.write(calendar.ics(engine, f, utcnow()))
        return
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
    try:
        shown = output.chosen_columns(columns, [c.name for c in query.selected_columns])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--columns") from None
    zones = reports.program_zones(engine) if tz.lower() == "program" else {}

    def zone_of(row: dict[str, Any]) -> str | None:
        return row.get("timezone") or zones.get(row.get("program_id", -1))

    rows = output.shift_times(reports.stream(engine, query), shift, zone_of)
    output.write(rows, shown, sys.stdout, fmt)


def audit_command(
    database_url: DatabaseUrl = None,
    dispatch: Annotated[
        str | None, typer.Option(metavar="ID", help="The story of this dispatch.")
    ] = None,
    site: Annotated[str | None, typer.Option(metavar="ID", help="The story of this site.")] = None,
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
    from etl.store.db import open_store

    shift = time_shift_option(tz)
    if chart is not None:
        _write_chart(database_url, dispatch, chart)
        return
    engine = open_store(database_url)
    query = audit.AuditQuery(dispatch, site, since, until).with_default_window()
    audit.require_known(engine, query)
    entries = output.shift_times(audit.trail(engine, query), shift, lambda row: row["timezone"])
    if jsonl:
        output.write(entries, audit.COLUMNS, sys.stdout, "jsonl")
        return
    shown = 0
    for shown, entry in enumerate(entries, 1):  # noqa: B007 (counted for the line below)
        # not typer.echo: it flushes each line, and a site's year is thousands of them
        sys.stdout.write(audit.describe(entry, shift) + "\n")
    if not shown:
        typer.echo("(no events)")


class StatusFormat(StrEnum):
    text = "text"
    json = "json"
    prometheus = "prometheus"


def _write_chart(database_url: str | None, dispatch_id: str | None, path: Path) -> None:
    from etl.read import chart
    from etl.store.db import open_store

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


def status_command(
    database_url: DatabaseUrl = None,
    max_age: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Stale (CRITICAL) when no fetch succeeded for this long: 5m, 1h and so on.",
        ),
    ] = "5m",
    window: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Report actions that ended failed or missed this recently and are not "
            "acknowledged (etl ack) (WARNING).",
        ),
    ] = "24h",
    act_within: ActWithin = "2m",
    min_delivery: Annotated[
        float,
        typer.Option(
            parser=number_between(0, 1000, "a percentage"),
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
    from etl.store.db import open_store

    max_age_delta, window_delta = duration(max_age), duration(window)
    fmt = StatusFormat.json if as_json else fmt
    try:
        engine = open_store(database_url)
        result = status.check(
            engine, max_age_delta, window_delta, min_delivery, duration(act_within)
        )
        counts = None
        if fmt == StatusFormat.prometheus:
            from etl.read import metrics

            counts = metrics.store_counts(engine)
    except EtlError as error:  # a store that cannot be read is as bad as it gets
        log.error("CRITICAL: %s", error)
        if fmt == StatusFormat.prometheus:
            _print_metrics(None, None, status.Health.CRITICAL)
        raise typer.Exit(status.Health.CRITICAL) from None
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
        (
            "failing",
            f"{sum(f.live for f in result.failing)} now, "
            f"{sum(not f.live for f in result.failing)} past not acknowledged",
        ),
    ]
    if result.last_failure_error:
        lines.insert(3, ("  its error", result.last_failure_error))
    for label, value in lines:
        typer.echo(f"{label:<18}{logs.one_line(value)}")
    typer.echo(f"{'status':<18}{result.code.name}")
    for problem in result.problems:
        typer.echo(f"  {logs.one_line(problem)}")
