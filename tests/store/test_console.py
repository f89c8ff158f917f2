"""The web console over real HTTP on loopback (`etl console`'s server, in a thread), on both
databases: each page from a store the processor filled, hostile names as text, the access rule,
the CSV downloads against `etl report`. Its look in a real browser: tests/system."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from markupsafe import escape
from sqlalchemy import Engine

from etl import serve
from etl.base.errors import ConfigError
from etl.read import pages
from etl.read.reports import ReportFilter
from etl.sandbox.emulator import Sandbox
from etl.store.db import make_engine
from tests.helpers import at, site, wait_listening
from tests.processes import InProcess, free_port
from tests.scenarios import World, active, ended
from tests.store.test_telemetry import hand_computed

CHECK = (timedelta(minutes=5), timedelta(hours=24))
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\"'"


class Console:
    """`etl console`'s server on a free loopback port."""

    def __init__(self, engine: Engine, password: str | None = None) -> None:
        self.where = serve.console_listener(f"127.0.0.1:{free_port()}", password)
        self.url = f"http://127.0.0.1:{self.where.port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=serve.serve_console, args=(engine, self.where, CHECK, self.stop)
        )

    def get(self, path: str, **options: object) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **options)  # type: ignore[arg-type]


@contextmanager
def running(console: Console) -> Iterator[Console]:
    """The console's server for the duration, stopped however its start or the test ends: left
    running, its listener would fail later tests."""
    console.thread.start()
    try:
        wait_listening(console.url + "/console/")
        yield console
    finally:
        console.stop.set()
        console.thread.join(timeout=10)
        assert not console.thread.is_alive()


@pytest.fixture
def console(engine: Engine) -> Iterator[Console]:
    with running(Console(engine)) as started:
        yield started


def page(console: Console, path: str) -> str:
    answer = console.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in answer.headers["Content-Security-Policy"]  # none at all
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    return answer.text


def test_each_page_shows_what_the_store_knows(world: World, console: Console) -> None:
    upcoming = active("d2", site("b", 30), start_time=at(60), end_time=at(120))
    world.step(active("d1", site("a", 12), site("b", None)), upcoming, ended("d0", site("a")))

    now = page(console, "/console/")
    assert 'id="dispatch-d1"' in now and 'id="dispatch-d2"' in now
    assert 'id="dispatch-d0"' not in now  # it has ended
    assert now.count(">curtailed<") == 2 and now.count(">none<") == 1  # d2 not begun
    assert now.index("dispatch-d1") < now.index("dispatch-d2")  # soonest first
    assert '<meta http-equiv="refresh" content="15">' in now
    assert 'class="health' in now

    one = page(console, "/console/dispatch?id=d1")
    assert 'src="data:image/svg+xml;base64,' in one
    assert "dispatch_created" in one and "action_succeeded" in one  # the audit trail
    assert one.count("#1 succeeded by") == 2  # each curtail's one attempt
    assert "12.0" in one  # site a's commitment

    its = page(console, "/console/site?id=a")
    assert "Site a" in its and "/console/dispatch?id=d1" in its and "d0" in its

    months = page(console, "/console/history")
    assert '<td class="num">3</td>' in months  # three dispatches this month
    assert "/console/history/dispatches.csv?program=&amp;site=" in months


def test_unknown_things_and_bad_requests_are_answered_plainly(console: Console) -> None:
    assert console.get("/console/dispatch?id=nope").status_code == 404
    assert console.get("/console/dispatch").status_code == 404
    assert console.get("/console/site?id=%3Cx%3E").status_code == 404
    assert console.get("/console/elsewhere").status_code == 404
    refused = console.get("/console/history?program=1e9")
    assert refused.status_code == 400
    assert refused.text == "program is a program's id, a whole number\n"
    assert console.get("/console/history?program=99999999999").status_code == 400
    assert requests.post(console.url + "/console/", timeout=5).status_code == 405


def test_hostile_names_are_only_text(world: World, console: Console) -> None:
    shown = active("d1", site("a", 5, name=HOSTILE))
    shown["program"] = {**shown["program"], "name": HOSTILE}
    world.step(shown)
    for path in ("/console/", "/console/dispatch?id=d1", "/console/site?id=a"):
        text = page(console, path)
        assert "<script>" not in text and "<img src=x" not in text
        assert str(escape(HOSTILE)) in text


def test_the_csv_downloads_are_etl_reports(cli: InProcess, sandbox: Sandbox) -> None:
    sandbox.dispatches = [active("d1", site("a", 12)), ended("d0", site("b"))]
    cli.ok("run")
    with running(Console(make_engine(cli.url))) as console:
        for name in ("dispatches", "performance"):
            answer = console.get(f"/console/history/{name}.csv?program=42&site=a")
            assert answer.status_code == 200
            assert answer.headers["Content-Disposition"] == f'attachment; filename="{name}.csv"'
            expected = cli.ok("report", name, "--format", "csv", "--program", "42", "--site", "a")
            assert answer.text == expected
        assert "d1" in console.get("/console/history/dispatches.csv?site=a").text
        assert "d0" not in console.get("/console/history/dispatches.csv?site=a").text


def test_history_gives_delivered_share_of_the_commitment_by_month(world: World) -> None:
    start, _ = hand_computed(world, curtailed_kw=75)
    (month,) = pages.history(world.engine, ReportFilter())
    assert month.month == start.astimezone(ZoneInfo("US/Central")).strftime("%Y-%m")
    assert month.dispatches == 1 and month.committed_kw == 20
    assert month.delivered_pct == pytest.approx(100 * (100 - 2300 / 30) / 20)
    assert pages.history(world.engine, ReportFilter(program_id=7)) == []
    assert pages.history(world.engine, ReportFilter(site_id="other")) == []


@pytest.mark.parametrize(
    ("latest_first", "shown"),
    [
        ([], "none"),
        ([("curtail", "succeeded")], "curtailed"),
        ([("restore", "waiting"), ("curtail", "succeeded")], "curtailed"),  # not sent yet
        ([("restore", "succeeded"), ("curtail", "succeeded")], "restored"),
        ([("curtail", "failed")], "curtail failed"),
        ([("restore", "pending"), ("curtail", "missed")], "curtail missed"),
        ([("curtail", "pending")], "curtail pending"),  # nothing sent yet: what is planned
        ([("curtail", "retrying")], "curtail retrying"),
    ],
)
def test_a_sites_commanded_state_is_its_latest_sent_command(
    latest_first: list[tuple[str, str]], shown: str
) -> None:
    assert pages.commanded(latest_first) == shown


def test_restored_after_the_end(world: World, console: Console) -> None:
    world.step(active("d1", site("a")))
    world.step(active("d1", site("a"), end_time=at(-1)))
    assert ">restored<" in page(console, "/console/dispatch?id=d1")


def test_with_a_password_every_page_asks_for_it(engine: Engine) -> None:
    with running(Console(engine, password="s3cret-pass")) as console:
        for path in ("/console/", "/console/history", "/calendar.ics", "/console/nope"):
            refused = console.get(path)
            assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
            assert console.get(path, auth=("x", "wrong")).status_code == 401
        assert console.get("/console/", auth=("anyone", "s3cret-pass")).status_code == 200


def test_beyond_loopback_the_console_needs_a_password_at_start(cli: InProcess) -> None:
    with pytest.raises(ConfigError, match=r"refusing to serve the console on 0\.0\.0\.0"):
        serve.console_listener("0.0.0.0:8080", None)
    assert serve.console_listener("0.0.0.0:8080", "pw").console.password == "pw"
    for args in (
        ("console", "--listen", "0.0.0.0:0"),
        ("serve", "--listen", "0.0.0.0:0", "--token", "t0ken-abcdefghijklmnop"),
    ):
        result = cli(*args)
        assert result.returncode == 2 and "refusing to serve the console" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1  # one line, with what to do
