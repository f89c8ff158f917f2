"""Reports, audit, status and retention over a store with every action state, on both databases."""

import csv
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from etl.base.timeutil import utcnow
from etl.ingest import dispatches
from etl.read import audit, output, pages, reports, status
from etl.store import fetch_runs, schema
from tests.docs import sql_examples
from tests.helpers import at, dispatch, site
from tests.processes import etl, etl_env
from tests.scenarios import World, active, ended


def overlap(ends: bool) -> list[dict[str, Any]]:
    first = ended("O1", site("f")) if ends else active("O1", site("f"), end_time=at(20))
    return [first, active("O2", site("f"))]


@pytest.fixture
def story(world: World) -> World:
    """Every action state: succeeded, failed, missed, skipped, superseded, and restores waiting."""
    tutorial = active("asdf", site("asdf", 12), site("lkjh", 40))
    cancelled = dispatch("C1", site("h"), start_time=at(60), end_time=at(120))
    test = active("T1", site("e"), test=True)
    world.step(tutorial, active("done", site("a")), *overlap(False), test, cancelled)
    world.handler.fail_first = 99
    world.step(
        tutorial,
        active("done", site("a")),
        *overlap(False),
        test,
        cancelled,
        active("fail", site("c")),
    )
    world.handler.fail_first = 0
    world.step(
        tutorial,
        ended("done", site("a")),
        *overlap(True),
        test,
        {**cancelled, "authorized": False},
        ended("fail", site("c")),
        ended("miss", site("d")),
    )
    return world


def rows(engine: Engine, query: Any) -> list[dict[str, Any]]:
    return list(reports.stream(engine, query))


def test_the_story_has_every_state(story: World) -> None:
    assert story.states() == {
        ("curtail", "asdf", "asdf"): "succeeded",
        ("curtail", "asdf", "lkjh"): "succeeded",
        ("restore", "asdf", "asdf"): "waiting",
        ("restore", "asdf", "lkjh"): "waiting",
        ("curtail", "done", "a"): "succeeded",
        ("restore", "done", "a"): "succeeded",
        ("curtail", "O1", "f"): "succeeded",
        ("restore", "O1", "f"): "superseded",
        ("curtail", "O2", "f"): "succeeded",
        ("restore", "O2", "f"): "waiting",
        ("curtail", "T1", "e"): "skipped",
        ("curtail", "fail", "c"): "failed",
        ("restore", "fail", "c"): "succeeded",  # an attempt may have reached the site
        ("curtail", "miss", "d"): "missed",
    }


def test_dispatches_report_gives_each_outcome(story: World) -> None:
    got = {
        r["dispatch_id"]: r
        for r in rows(story.engine, reports.dispatches_report(reports.ReportFilter()))
    }
    assert {d: r["outcome"] for d, r in got.items()} == {
        "asdf": "curtailed",  # under way: its sites are held
        "done": "restored",
        "O1": "restored",  # its site handed over to O2, which still holds it
        "O2": "curtailed",
        "T1": "test",
        "C1": "cancelled",
        "fail": "failed",
        "miss": "missed",
    }
    assert got["asdf"]["committed_kw"] == 52 and got["asdf"]["sites"] == 2
    assert got["O1"]["restores_superseded"] == 1 and got["done"]["restores_succeeded"] == 1
    assert got["asdf"]["restores_waiting"] == 2 and got["done"]["restores_waiting"] == 0
    assert got["asdf"]["start_time"].tzinfo is not None and got["T1"]["test"] is True


def test_filters(story: World) -> None:
    def ids(**f: Any) -> set[str]:
        query = reports.dispatches_report(reports.ReportFilter(**f))
        return {r["dispatch_id"] for r in rows(story.engine, query)}

    assert ids(test=True) == {"T1"}
    assert "T1" not in ids(test=False)
    assert ids(site_id="f") == {"O1", "O2"}
    assert ids(since=utcnow() + timedelta(minutes=30)) == {"C1"}
    assert ids(until=utcnow() - timedelta(minutes=30)) == {"O1", "done", "fail", "miss"}
    assert ids(program_id=999) == set()
    log = rows(story.engine, reports.curtailments_report(reports.ReportFilter(site_id="f")))
    assert sorted((r["dispatch_id"], r["action"], r["state"]) for r in log) == [
        ("O1", "curtail", "succeeded"),
        ("O1", "restore", "superseded"),
        ("O2", "curtail", "succeeded"),
        ("O2", "restore", "waiting"),
    ]


def test_programs_and_sites_reports(story: World) -> None:
    (program,) = rows(story.engine, reports.programs_report(reports.ReportFilter()))
    assert program["program_id"] == 42 and program["dispatches"] == 8
    assert program["curtails_failed"] == 1 and program["curtails_missed"] == 1
    daily = rows(story.engine, reports.sites_report(reports.ReportFilter(), "day"))
    by_site = {r["site_id"]: r for r in daily}
    assert by_site["lkjh"]["committed_kw"] == 40 and re.fullmatch(
        r"\d{4}-\d\d-\d\d", by_site["lkjh"]["day"]
    )
    assert "e" not in by_site and "h" not in by_site  # test and cancelled dispatches do not count
    monthly = rows(story.engine, reports.sites_report(reports.ReportFilter(), "month"))
    assert {r["site_id"] for r in monthly} == set(by_site)
    assert all(len(r["month"]) == 7 for r in monthly)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "table"])
def test_machine_formats_parse_back(story: World, fmt: str) -> None:
    query = reports.curtailments_report(reports.ReportFilter())
    columns = [c.name for c in query.selected_columns]
    out = io.StringIO()
    assert output.write(reports.stream(story.engine, query), columns, out, fmt) == 14
    text_out = out.getvalue()
    if fmt == "csv":
        parsed = list(csv.DictReader(io.StringIO(text_out)))
    elif fmt == "json":
        parsed = json.loads(text_out)
    elif fmt == "jsonl":
        parsed = [json.loads(line) for line in text_out.splitlines()]
    else:
        lines = text_out.splitlines()
        assert lines[0].split()[:3] == ["action_id", "action", "episode"] and len(lines) == 15
        return
    assert len(parsed) == 14 and set(parsed[0]) == set(columns)
    keys = {r["idempotency_key"] for r in parsed}
    assert len(keys) == 14
    assert {r["state"] for r in parsed} >= {
        "succeeded",
        "failed",
        "missed",
        "skipped",
        "superseded",
    }


def test_report_command_streams_json(story: World, database_url: str) -> None:
    result = etl("report", "dispatches", "--format", "json", "--no-test", env=etl_env(database_url))
    assert result.returncode == 0, result.stderr
    assert {r["dispatch_id"] for r in json.loads(result.stdout)} == {
        "asdf",
        "done",
        "O1",
        "O2",
        "C1",
        "fail",
        "miss",
    }
    bad = etl("report", "sites", "--since", "last tuesday", env=etl_env(database_url))
    assert bad.returncode == 2 and "not a time" in bad.stderr and "Traceback" not in bad.stderr


def test_audit_of_a_dispatch_tells_its_story_in_order(story: World) -> None:
    trail = list(audit.trail(story.engine, audit.AuditQuery(dispatch_id="fail")))
    assert [e["kind"] for e in trail] == [
        "dispatch_created",
        "action_planned",
        "action_claimed",
        "action_retrying",
        "dispatch_end_time_moved",  # the API moved its window into the past
        "dispatch_changed",
        "action_failed",
        "action_planned",  # its restore: the failed attempt may have reached the site
        "action_planned",  # ...due at once, the dispatch being over
        "action_claimed",
        "action_succeeded",
    ]
    key = trail[1]["details"]["idempotency_key"]
    curtail = [e for e in trail if e["details"].get("action") == "curtail"]
    assert len(curtail) == 4 and all(e["details"]["idempotency_key"] == key for e in curtail)
    assert "site controller unreachable" in trail[3]["details"]["error"]
    assert "gave up after 1 failed attempts" in trail[6]["details"]["note"]
    assert {e["details"]["action"] for e in trail[7:]} == {"restore"}
    line = audit.describe(trail[3])
    assert "action_retrying" in line and "dispatch fail site c" in line and key in line


def test_audit_of_a_site_includes_its_dispatches(story: World) -> None:
    trail = list(audit.trail(story.engine, audit.AuditQuery(site_id="f")))
    kinds = {(e["kind"], e["dispatch_id"]) for e in trail}
    assert {("dispatch_created", "O1"), ("dispatch_created", "O2")} <= kinds
    assert ("action_superseded", "O1") in kinds
    assert all(e["site_id"] in ("f", None) for e in trail)
    assert [e["id"] for e in trail] == sorted(e["id"] for e in trail)


def test_audit_defaults_to_the_last_day_and_exports_json_lines(
    story: World, database_url: str
) -> None:
    query = audit.AuditQuery().with_default_window()
    assert query.since is not None and abs(
        utcnow() - timedelta(hours=24) - query.since
    ) < timedelta(seconds=5)
    result = etl("audit", "--jsonl", env=etl_env(database_url))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    with story.engine.connect() as conn:
        assert len(lines) == conn.execute(select(func.count()).select_from(schema.events)).scalar()
    people = etl("audit", "--dispatch", "miss", env=etl_env(database_url))
    assert "action_missed" in people.stdout and "the dispatch window passed" in people.stdout


def test_status_of_a_fresh_store_is_critical(engine: Engine) -> None:
    result = status.check(engine, timedelta(minutes=5), timedelta(hours=24))
    assert result.code == status.Health.CRITICAL and result.schema_revision is not None
    assert result.problems == ["CRITICAL: no fetch has succeeded yet"]


def test_status_of_a_healthy_store_is_ok(world: World) -> None:
    world.step(active("d1", site("a")))
    result = status.check(world.engine, timedelta(minutes=5), timedelta(hours=24))
    assert result.code == status.Health.OK and result.problems == []
    assert result.restores_waiting == 1
    assert result.last_success_age_seconds is not None and result.last_success_age_seconds < 60
    stale = status.check(world.engine, timedelta(0), timedelta(hours=24))
    assert stale.code == status.Health.CRITICAL and "last successful fetch" in stale.problems[0]


@pytest.mark.parametrize(("skew", "words"), [(90, "behind"), (-90, "ahead of")])
def test_status_warns_of_a_clock_that_makes_actions_late_or_early(
    world: World, skew: int, words: str
) -> None:
    world.sandbox.faults.clock_offset_seconds = skew
    world.step(active("d1", site("a")))
    result = status.check(world.engine, timedelta(minutes=5), timedelta(hours=24))
    assert result.code == status.Health.WARNING and result.clock_offset_seconds is not None
    assert abs(result.clock_offset_seconds - skew) <= 5
    (problem,) = result.problems
    shown = re.match(rf"WARNING: this machine's clock is (\d+) s {words} the API's", problem)
    assert shown and abs(int(shown[1]) - 90) <= 5, problem
    world.sandbox.faults.clock_offset_seconds = 0  # set right: the next fetch clears it
    world.step(active("d1", site("a")))
    check = status.check(world.engine, timedelta(minutes=5), timedelta(hours=24))
    assert check.code == status.Health.OK


def test_status_command_exit_codes(world: World, database_url: str) -> None:
    env = etl_env(database_url)
    world.sandbox.faults.statuses = [500] * 10
    with pytest.raises(Exception, match="HTTP 500"):
        dispatches.fetch(world.engine, world.client)
    result = etl("status", env=env)
    assert result.returncode == 2 and "no fetch has succeeded yet" in result.stdout
    assert "HTTP 500" in result.stdout  # the last failure's error
    world.sandbox.faults.statuses = []
    world.step(active("d1", site("a")))
    healthy = etl("status", "--json", env=env)
    assert healthy.returncode == 0
    assert json.loads(healthy.stdout)["code"] == 0


def row_counts(engine: Engine) -> dict[str, int]:
    tables = (
        schema.fetch_runs,
        schema.events,
        schema.dispatches,
        schema.actions,
        schema.action_attempts,
    )
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in tables
        }


def test_prune_removes_only_unchanged_old_fetch_runs(story: World) -> None:
    for _ in range(3):  # the minutely runs that find nothing new
        dispatches.fetch(story.engine, story.client)
    before = row_counts(story.engine)
    assert fetch_runs.prune(story.engine, timedelta(days=1)) == 0  # none old enough
    deleted = fetch_runs.prune(story.engine, timedelta(0))
    after = row_counts(story.engine)
    with story.engine.connect() as conn:
        unchanged_runs = conn.execute(
            select(func.count()).where(schema.fetch_runs.c.events == 0)
        ).scalar()
    assert deleted >= 2 and after["fetch_runs"] == before["fetch_runs"] - deleted
    assert unchanged_runs == 1  # the latest is kept, for `etl status`
    assert {k: v for k, v in after.items() if k != "fetch_runs"} == {
        k: v for k, v in before.items() if k != "fetch_runs"
    }


@pytest.mark.parametrize("number", range(len(sql_examples())))
def test_each_documented_sql_example_runs_and_answers(story: World, number: int) -> None:
    with story.engine.connect() as conn:
        answer = conn.execute(text(sql_examples()[number])).all()
    assert answer, f"example {number} returned no rows:\n{sql_examples()[number]}"


def one_of_each_kind(world: World) -> None:
    """A dispatch that ended (no readings yet), a test one, an upcoming one, a cancelled one."""
    cancelled = dispatch("c1", site("d", 40), start_time=at(60), end_time=at(90), authorized=False)
    world.step(
        ended("e1", site("a", 5)),
        active("t1", site("c", 30), test=True),
        active("up", site("b", 20), start_time=at(60), end_time=at(90)),
        cancelled,
    )


def test_the_programs_report_and_the_history_count_the_same_dispatches(world: World) -> None:
    """Cancelled, test and upcoming dispatches are counted apart, their commitments in no total;
    a month whose dispatches have no readings is not measured yet (it was 0.0 kW delivered)."""
    one_of_each_kind(world)
    counts = ("dispatches", "cancelled", "test", "upcoming", "committed_kw")
    (program,) = rows(world.engine, reports.programs_report(reports.ReportFilter()))
    assert [program[name] for name in counts] == [4, 1, 1, 1, 5]
    months = pages.history(world.engine, reports.ReportFilter())
    assert [sum(getattr(month, name) for month in months) for name in counts] == [4, 1, 1, 1, 5]
    assert [(m.delivered_kw, m.delivered_pct) for m in months if m.dispatches] == [(None, None)]


@pytest.mark.parametrize(
    ("report", "needed"),
    [
        (reports.dispatches_report, ["dispatch_id", "start_time", "committed_kw", "outcome"]),
        (reports.curtailments_report, ["action_id", "action", "episode", "state", "site_id"]),
        (reports.programs_report, ["program_id", "dispatches", "committed_kw"]),
        (reports.performance_report, ["dispatch_id", "site_id", "delivered_pct"]),
        (lambda f: reports.sites_report(f, "day"), ["site_id", "day", "committed_kw"]),
    ],
)
def test_report_tables_fit_80_columns_and_say_what_they_left_out(
    story: World, report: Any, needed: list[str]
) -> None:
    query = report(reports.ReportFilter())
    columns = [c.name for c in query.selected_columns]
    out, notes = io.StringIO(), io.StringIO()
    written = output.write(reports.stream(story.engine, query), columns, out, "table", notes)
    lines = out.getvalue().splitlines()
    assert written and len(lines) == 1 + written and max(map(len, lines)) <= 80
    kept = lines[0].split()
    assert set(needed) <= set(kept) and kept == [c for c in columns if c in kept]
    left_out = [c for c in columns if c not in kept]
    assert all(name in notes.getvalue() for name in left_out)
    assert bool(left_out) == ("--columns" in notes.getvalue())


def test_the_report_command_fits_80_columns_unless_asked_for_csv(
    story: World, database_url: str
) -> None:
    table = etl("report", "dispatches", env=etl_env(database_url))
    assert table.returncode == 0 and max(map(len, table.stdout.splitlines())) <= 80
    assert "program_type" not in table.stdout and "program_type" in table.stderr
    every = etl("report", "dispatches", "--format", "csv", env=etl_env(database_url))
    assert "program_type" in every.stdout.splitlines()[0] and every.stderr == ""
