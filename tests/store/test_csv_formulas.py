"""Names from the API written as formulas reach no CSV etl writes as one: each report's CSV (what
`etl report --format csv` writes) and the console's downloads, on both databases."""

import csv
import io

from etl.read import output, reports
from etl.read.reports import ReportFilter
from tests.helpers import site
from tests.scenarios import World, active
from tests.store.test_console import Console, running
from tests.store.test_telemetry import hand_computed

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NAME = '=HYPERLINK("http://evil.example","open")'
REPORTS = {
    "dispatches": reports.dispatches_report,
    "sites": reports.sites_report,
    "programs": reports.programs_report,
    "curtailments": reports.curtailments_report,
    "performance": reports.performance_report,
}


def cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]


def test_no_csv_begins_a_cell_as_a_formula(world: World) -> None:
    hand_computed(world, curtailed_kw=75, dispatch_id="=measured", site_id="+a")
    hostile = active("-d1", site("+a", 12, name=NAME), site("@b", 5, name="-2+3"))
    hostile["program"] = {**hostile["program"], "name": "=1+1"}
    world.step(hostile)
    written = {}
    for kind, report in REPORTS.items():
        query = report(ReportFilter())
        out = io.StringIO()
        output.write(
            reports.stream(world.engine, query),
            [c.name for c in query.selected_columns],
            out,
            "csv",
        )
        written[kind] = out.getvalue()
    with running(Console(world.engine)) as console:
        for name in ("dispatches", "performance"):
            written[f"console {name}"] = console.get(f"/console/history/{name}.csv").text
    for kind, text in written.items():
        assert "'=1+1" in text or "'+a" in text, kind  # the hostile rows are there, as text
        formulas = [cell for cell in cells(text) if cell.startswith(FORMULA_STARTS)]
        assert formulas == [], kind
