"""The web console over real HTTP on loopback (`etl console`'s server, in a thread), on both
databases: each page from a store the processor filled, hostile names and ids as text or not
found, the access rule, the CSV downloads against `etl report`, each page bounded however large
the dispatch. Its look in a real browser, and under load: tests/system."""

import base64
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
import requests
from markupsafe import escape
from sqlalchemy import Engine, delete, update

from etl import serve
from etl.act.acknowledge import Acknowledgement, acknowledge
from etl.base.errors import ConfigError
from etl.base.timeutil import utcnow
from etl.base.vocabulary import OutboxEndpoint, ReadingUnits
from etl.console import app
from etl.handlers import ActionRequest, HandlerFailed
from etl.ingest import dispatches, telemetry
from etl.read import chart, pages, status
from etl.read.reports import ReportFilter
from etl.sandbox.emulator import Sandbox
from etl.store import outbox, schema
from etl.store.db import make_engine
from etl.store.schema import actions
from tests.helpers import at, dispatch, site, wait_listening
from tests.processes import InProcess, free_port
from tests.scenarios import Recorder, World, active, ended
from tests.store.test_reports import one_of_each_kind
from tests.store.test_telemetry import delivered_in_time, hand_computed

CHECK = status.Limits(timedelta(minutes=5), timedelta(hours=24))
SVG = {"svg": "http://www.w3.org/2000/svg"}
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\"'"


class Console:
    """`etl console`'s server on a free loopback port."""

    def __init__(
        self, engine: Engine, password: str | None = None, calendar_token: str | None = None
    ) -> None:
        address = f"127.0.0.1:{free_port()}"
        self.where = serve.console_listener(address, password, calendar_token)
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
    assert console.get("/console/?tz=Mars/Olympus").status_code == 400  # no such time zone
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


def test_a_calendar_app_subscribes_with_the_token_and_no_password(engine: Engine) -> None:
    """Google and Outlook subscribe to a URL and cannot send a password: the calendar's own
    token, a secret part of its path, lets them in, and nothing else of the console."""
    token = "c4lendar-abcdefghijklmnop"
    with running(Console(engine, password="s3cret-pass", calendar_token=token)) as console:
        subscribed = console.get(f"/calendar/{token}.ics")
        assert subscribed.status_code == 200 and subscribed.text.startswith("BEGIN:VCALENDAR")
        for wrong in (f"/calendar/{token}x.ics", f"/calendar/{token[:-1]}.ics", "/calendar/"):
            assert console.get(wrong).status_code == 404
        assert console.get("/calendar.ics").status_code == 401  # the rest wants the password
    with running(Console(engine)) as console:  # no token: no such path
        assert console.get(f"/calendar/{token}.ics").status_code == 404
    with pytest.raises(ConfigError, match="ETL_CALENDAR_TOKEN must be 16 to 200"):
        serve.console_listener("127.0.0.1:0", None, "short")


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


# a handler's error as a site controller might word it: markup, and far too long for a page
ERROR = "<b>controller</b> unreachable: " + "retry later " * 40
PACIFIC = {"id": 43, "name": "CAISO", "timezone": "US/Pacific", "market": "CAISO"}


@dataclass
class FailsFor(Recorder):
    """The recorder, failing every call for one site."""

    site_id: str = "a"

    def __call__(self, request: ActionRequest) -> str:
        if request.site_id != self.site_id:
            return super().__call__(request)
        with self.lock:
            self.requests.append(request)
        raise HandlerFailed(ERROR)


def chart_of(text: str) -> str:
    """The page's chart, base64-encoded."""
    return re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', text)[0]


def between(text: str, first: str, last: str) -> str:
    """The part of the page from `first` to `last` (or its end)."""
    start = text.index(first)
    end = text.find(last, start + len(first))
    return text[start : end if end >= 0 else len(text)]


def times_shown(text: str) -> list[str]:
    return re.findall(r"<time [^>]*>([^<]*)</time>", text)


def test_a_site_failing_now_is_at_the_top_in_red_with_its_error_and_since(
    world: World, console: Console
) -> None:
    world.handler = FailsFor(site_id="a")
    world.step(active("d1", site("a"), site("b")))
    world.sandbox.dispatches = [active("d1", site("a"), site("b"), site("x"))]
    dispatches.fetch(world.engine, world.client)  # x is listed, not acted on yet

    now = page(console, "/console/")
    top = between(now, '<section class="failing" id="failing">', 'id="dispatch-d1"')
    assert "Site a" in top and "/console/dispatch?id=d1" in top and "curtail" in top
    assert str(escape("<b>controller</b> unreachable")) in top and "<b>controller" not in now
    assert ERROR[:400] not in now and str(escape(ERROR))[:400] not in now  # bounded
    (since,) = times_shown(top)
    assert since.endswith(datetime.now(ZoneInfo("US/Central")).strftime("%Z"))
    assert "CRITICAL" not in top  # failing, not yet late
    card = between(now, 'id="dispatch-d1"', "</section>")
    assert "curtailed 1 of 3, 1 failing, 1 pending" in card
    assert '<span class="state failing">curtail retrying</span>' in card  # red, not grey

    with world.engine.begin() as conn:  # planned 5 minutes ago: still not curtailed
        conn.execute(update(actions).values(created_at=utcnow() - timedelta(minutes=5)))
    late = between(page(console, "/console/"), 'id="failing"', 'id="dispatch-d1"')
    assert "CRITICAL" in late and "Site a" in late


def test_a_restore_that_keeps_failing_stays_on_now_and_next_after_the_end(
    world: World, console: Console
) -> None:
    world.step(active("d1", site("a")))
    world.handler = FailsFor(site_id="a")
    world.step(active("d1", site("a"), end_time=at(-1)))
    now = page(console, "/console/")
    top = between(now, 'id="failing"', 'id="dispatch-d1"')
    assert "Site a" in top and "restore" in top
    card = between(now, 'id="dispatch-d1"', "</section>")
    assert '<span class="state failing">restore retrying</span>' in card


def test_past_failures_are_listed_apart_until_acknowledged(world: World, console: Console) -> None:
    world.handler = FailsFor(site_id="a")
    world.step(active("d1", site("a")), active("d2", site("b"), start_time=at(30)))
    world.handler = Recorder()  # the restore that follows succeeds
    world.step(ended("d1", site("a")), active("d2", site("b"), start_time=at(30)))
    now = page(console, "/console/")
    assert 'id="failing"' not in now  # nothing fails a site now
    past = between(now, '<section class="past" id="past-failures">', 'id="dispatch-d2"')
    assert "Site a" in past and "d1" in past and "curtail failed" in past
    assert "etl ack --dispatch d1 --site a" in past
    acknowledge(world.engine, Acknowledgement("op", "called them", "d1"), timedelta(hours=24))
    assert 'id="past-failures"' not in page(console, "/console/")


def test_a_large_dispatch_is_summarized_failing_sites_first_the_rest_folded(
    world: World, console: Console
) -> None:
    """Its 250 sites are paged on its own page, failing first, and counted on "now and next";
    its chart draws the fleet's sum and the sites that most need an eye."""
    world.handler = FailsFor(site_id="s150")
    many = [site(f"s{n:03}") for n in range(250)]
    world.step(active("big", *many), active("next", site("z"), start_time=at(30)))
    now = page(console, "/console/")
    card = between(now, 'id="dispatch-big"', 'id="dispatch-next"')
    assert "curtailed 249 of 250, 1 failing" in card
    assert "Site s150" in card and card.count("<tr>") == 1 + 1  # its one site needing an eye
    assert 'and 249 more sites: on <a href="/console/dispatch?id=big">' in card

    first = page(console, "/console/dispatch?id=big")
    assert "curtailed 249 of 250, 1 failing" in first
    assert "Sites 1 to 100 of 250, failing and pending first" in first
    sites = between(first, 'id="pager"', "</table>")
    assert sites.count("<tr>") == 1 + pages.PAGE_SITES
    assert sites.index("Site s150") < sites.index("Site s000")  # failing first
    assert '<a href="/console/dispatch?id=big&amp;page=2">next →</a>' in sites
    actions = between(first, "<h2>Actions</h2>", "</table>")
    # each site's curtail, and the restore of each curtailed (s150's failed)
    assert actions.count("<tr>") == 1 + 2 * pages.PAGE_SITES - 1
    assert "s150" in actions and "s249" not in actions  # this page's sites' alone
    svg = ElementTree.fromstring(base64.b64decode(chart_of(first)))
    panels = [g for g in svg.findall("svg:g", SVG) if "panel" in g.get("class", "")]
    assert [g.get("class") for g in panels][:2] == ["panel fleet", "panel"]
    assert panels[1].get("data-site") == "s150"  # its curtail failed
    assert len(panels) == 1 + chart.MOST_PANELS
    assert svg.findtext("svg:text[@class='more']", "", SVG) == "and 230 more sites"

    last = page(console, "/console/dispatch?id=big&page=9&tz=UTC")  # past the last: the last
    assert "Sites 201 to 250 of 250" in last and "page 3 of 3" in last
    assert '<a href="/console/dispatch?id=big&amp;page=2&amp;tz=UTC">← previous</a>' in last
    assert "next →" not in last
    assert 'id="chart"' not in last and "<h2>Timeline</h2>" not in last  # on the first page
    assert between(last, 'id="pager"', "</table>").count("<tr>") == 1 + 50


class VisibleText(HTMLParser):
    """What a person reads on a page: its text and what shows on hover (title), less its style
    sheet; not a <time>'s machine-readable datetime, which is not shown."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hidden += tag in ("style", "script", "title")
        self.parts += [value for name, value in attrs if name == "title" and value]

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("style", "script", "title")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    return " ".join(parser.parts)


# a time shown in UTC: "12:15:33Z", "12:15Z", "+00:00", "12:15 UTC"
UTC_TIME = re.compile(r"\d\d:\d\d(:\d\d(\.\d+)?)?(Z|\+00:00| UTC\b)")


@pytest.mark.parametrize(
    ("path", "zone"),
    [
        ("/console/", "US/Central"),  # its first dispatch's, d1's
        ("/console/dispatch?id=d2", "US/Pacific"),
        ("/console/dispatch?id=d1", "US/Central"),  # its timeline tells of a site failing
        ("/console/site?id=a", "US/Pacific"),  # its first dispatch's, the newest: d2
        ("/console/history", "US/Pacific"),  # the newest dispatch's, d2's
        ("/console/?tz=UTC", "UTC"),
        ("/console/dispatch?id=d2&tz=Europe/Paris", "Europe/Paris"),
        ("/console/dispatch?id=d1&tz=Asia/Tokyo", "Asia/Tokyo"),
        ("/console/site?id=a&tz=Europe/Paris", "Europe/Paris"),
        ("/console/history?tz=Asia/Tokyo", "Asia/Tokyo"),
    ],
)
def test_each_page_shows_every_time_in_one_zone_that_it_names(
    world: World, console: Console, path: str, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every time a person reads, the status banner's and the audit trail's too (its lines and
    the times among their details), in the zone the page names."""
    monkeypatch.setattr(app, "HEALTH_SECONDS", 0.0)  # the banner judged after the steps below
    world.step(ended("d0", site("a")))
    world.handler = FailsFor(site_id="a")
    pacific = {**dispatch("x")["program"], **PACIFIC}
    world.step(active("d1", site("a")), active("d2", site("a"), program=pacific, start_time=at(30)))
    text = page(console, path)
    assert f'<span id="zone">times in {zone}</span>' in text
    abbreviation = datetime.now(ZoneInfo(zone)).strftime("%Z")
    assert {shown.split()[-1] for shown in times_shown(text)} <= {abbreviation}
    shown = visible_text(text)
    assert "failing since" in shown  # site a's curtail, in the status banner atop each page
    if zone != "UTC":
        assert not UTC_TIME.findall(shown), [
            shown[max(0, m.start() - 60) : m.end()] for m in UTC_TIME.finditer(shown)
        ]
        offset = datetime.now(ZoneInfo(zone)).strftime("%z")
        assert f"{offset[:3]}:{offset[3:]}" in shown  # the banner's and the trail's, with it


def test_the_site_page_shows_an_action_failing_now(world: World, console: Console) -> None:
    world.handler = FailsFor(site_id="a")
    world.step(active("d1", site("a")))
    failures = between(page(console, "/console/site?id=a"), "<h2>Failures</h2>", "<h2>")
    assert "none" not in failures and "/console/dispatch?id=d1" in failures
    assert '<span class="state failing">curtail retrying</span>' in failures
    assert str(escape("<b>controller</b> unreachable")) in failures


def test_history_counts_cancelled_test_and_upcoming_apart_and_not_measured_yet(
    world: World, console: Console
) -> None:
    one_of_each_kind(world)
    months = between(page(console, "/console/history"), 'id="months"', "</table>")
    assert "not measured yet" in months and '<td class="num">0.0</td>' not in months
    rows = [re.findall(r'<td class="num">([^<]*)</td>', row) for row in months.split("<tr>")[2:]]
    # the dispatches, of which cancelled, test and upcoming, and the others' kW committed
    assert [sum(float(row[n]) for row in rows) for n in range(5)] == [4, 1, 1, 1, 5]


def test_the_chart_fits_a_short_dispatch_and_draws_live_load_under_way(
    world: World, console: Console
) -> None:
    """A 3-minute dispatch was a sliver of a 1.5-hour chart, and drew no load until Voltus's
    readings came, 20 minutes after its end."""
    world.step(active("short", site("a"), start_time=at(-2), end_time=at(1)))
    minute = utcnow().replace(second=0, microsecond=0)
    queued = [
        outbox.Queued(
            endpoint=OutboxEndpoint.TELEMETRY,
            site_id="a",
            meter_id="",  # its only meter
            interval_end=minute - timedelta(minutes=m),
            interval_seconds=60,
            units=ReadingUnits.KW,
            value=90.0,
        )
        for m in range(8)
    ]
    with world.engine.begin() as conn:  # the site's own readings, as etl sends them to Voltus
        outbox.enqueue(conn, queued, utcnow())
    svg = ElementTree.fromstring(
        base64.b64decode(chart_of(page(console, "/console/dispatch?id=short")))
    )
    ns = SVG
    (panel,) = svg.findall("svg:g[@class='panel']", ns)
    rect = panel.find("svg:rect[@class='window']", ns)
    assert rect is not None
    window = float(rect.get("width", "0"))
    plot = chart.WIDTH - chart.MARGIN_LEFT - chart.MARGIN_RIGHT
    assert window > plot / 5  # it was 3 minutes of 93
    assert panel.find("svg:polyline[@class='load']", ns) is not None
    assert "live" in panel.findtext("svg:text", "", ns)


# 11 s to build on SQLite, 30 s on PostgreSQL: the bounds are the same code on both, which the
# 250-site test above and the list test below check on each
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dispatch_of_5000_sites_is_a_page_under_a_megabyte(
    world: World, console: Console
) -> None:
    """It was an 18 MB page whose chart was 1,250,074 pixels tall, seconds of the server's time
    each: six at once held /healthz for 56 s (tests/system/test_console_load.py)."""
    world.handler = FailsFor(site_id="s04321")
    world.step(active("big", *[site(f"s{n:05}") for n in range(5000)]))
    answer = console.get("/console/dispatch?id=big")
    assert answer.status_code == 200 and len(answer.content) < 1_000_000
    text = answer.text
    assert "curtailed 4,999 of 5,000, 1 failing" in text
    assert "Sites 1 to 100 of 5,000, failing and pending first" in text and "page 1 of 50" in text
    sites = between(text, 'id="pager"', "</table>")
    assert sites.index("Site s04321") < sites.index("Site s00000")  # failing first
    svg = ElementTree.fromstring(base64.b64decode(chart_of(text)))
    assert int(svg.get("height", "0")) < 10_000
    assert svg.findtext("svg:text[@class='more']", "", SVG) == "and 4,980 more sites"
    assert "more events: <code>etl audit --dispatch big</code> tells them all" in text
    # `etl audit --chart` draws the same picture
    picture = chart.render(chart.chart_data(world.engine, "big"))
    assert len(picture) < 200_000 and "and 4,980 more sites" in picture

    now = console.get("/console/")
    assert len(now.content) < 100_000
    assert 'and 4,999 more sites: on <a href="/console/dispatch?id=big">' in now.text


def test_ids_no_store_can_hold_are_not_found_and_bad_parameters_refused(
    world: World, console: Console
) -> None:
    """On PostgreSQL, /console/dispatch?id=%00 answered 503 with the database's error: a NUL is
    no id any store holds (etl.source.records), and no page asks for it."""
    world.step(active("d1", site("a")))
    long = "x" * 201
    for path in (
        "/console/dispatch?id=%00",
        "/console/dispatch?id=d1%00",
        f"/console/dispatch?id={long}",
        "/console/site?id=%00",
        "/console/site?id=a%0A",
    ):
        assert console.get(path).status_code == 404, path
    for path in (
        "/console/history?site=%00",
        "/console/history/dispatches.csv?site=a%00",
        "/console/history/performance.csv?site=%00",
        f"/console/history?site={long}",
        "/console/history?program=%00",
        "/console/?tz=%00",
        "/console/dispatch?id=d1&tz=UTC%00",
        "/console/dispatch?id=d1&page=%00",
        "/console/dispatch?id=d1&page=0",
        "/console/dispatch?id=d1&page=-1",
        "/console/dispatch?id=d1&page=%EF%BC%92",  # a digit, but not an ASCII one
    ):
        assert console.get(path).status_code == 400, path
    assert "Dispatch d1" in page(console, "/console/dispatch?id=d1&page=2")  # its only page


def test_every_list_on_a_page_is_bounded_and_counts_the_rest(
    world: World, console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "MOST_ROWS", 1)
    world.handler = FailsFor(site_id="a")
    world.step(active("d1", site("a"), site("b")), active("d2", site("a"), start_time=at(-5)))
    now = page(console, "/console/")
    failing = between(now, 'id="failing"', "</section>")
    assert failing.count("<tr>") == 1 + 1
    assert "and 1 more action failing a site: <code>etl status</code> names them all" in failing
    assert now.count('<section class="card"') == 1 and "and 1 more dispatch: " in now

    its = page(console, "/console/site?id=a")
    assert "and 1 more action failing it" in its and "and 1 more dispatch: " in its
    timeline = between(page(console, "/console/dispatch?id=d1"), "<h2>Timeline</h2>", "</p>")
    assert timeline.count("<tr>") == 1 and "more events: " in timeline
    months = page(console, "/console/history")  # one month: nothing more
    assert "more month" not in months and "more program" not in months


def test_the_chart_draws_the_fleets_sum_then_the_sites_furthest_short(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = active(
        "d1", site("a", 10), site("b", 40), site("c", 20), start_time=at(-90), end_time=at(-30)
    )
    world.step(held)
    responded = {**held, "sites": [s for s in held["sites"] if s["id"] != "b"]}
    delivered_in_time(world.sandbox, responded)  # b's controller never curtailed
    telemetry.fetch_telemetry(world.engine, world.client)
    every = chart.chart_data(world.engine, "d1")
    fleet, *its_sites = every.panels
    assert fleet.summed == 3 and fleet.commitment_kw == 70 and not fleet.commands
    assert its_sites[0].site_id == "b" and every.more == 0  # 40 kW short
    by_time = [dict(panel.load) for panel in its_sites]
    assert fleet.load and all(
        kw == pytest.approx(sum(s[at] for s in by_time)) for at, kw in fleet.load
    )

    monkeypatch.setattr(chart, "MOST_PANELS", 1)
    drawn = chart.chart_data(world.engine, "d1")
    assert [panel.site_id for panel in drawn.panels] == ["", "b"] and drawn.more == 2
    svg = ElementTree.fromstring(chart.render(drawn))
    label = svg.findtext("svg:g[@class='panel fleet']/svg:text", "", SVG)
    assert label.startswith("all 3 sites, summed: commitment 70 kW, baseline ")
    assert svg.findtext("svg:text[@class='more']", "", SVG) == "and 2 more sites"


def test_the_fleets_panel_sums_the_sites_listed_now_and_says_how_many_it_read(
    world: World,
) -> None:
    """A site dropped from the dispatch was still in the fleet's commitment; a sum of some
    sites' readings was labelled as all of them, and read as their shortfall."""
    held = active(
        "d1", site("a", 10), site("b", 40), site("c", 20), start_time=at(-90), end_time=at(-30)
    )
    world.step(held)
    telemetry.fetch_telemetry(world.engine, world.client)
    with world.engine.begin() as conn:  # c's readings never came
        conn.execute(delete(schema.telemetry).where(schema.telemetry.c.site_id == "c"))
    world.step({**held, "sites": [s for s in held["sites"] if s["id"] != "b"]})  # b dropped
    fleet = chart.chart_data(world.engine, "d1").panels[0]
    assert (fleet.summed, fleet.commitment_kw, fleet.read) == (2, 30, 1)
    svg = ElementTree.fromstring(chart.render(chart.chart_data(world.engine, "d1")))
    label = svg.findtext("svg:g[@class='panel fleet']/svg:text", "", SVG)
    assert label.startswith("2 sites, summed: 1 of them with readings: commitment 30 kW")


def test_one_is_one_site(world: World, console: Console) -> None:
    """It said "1 more sites"."""
    world.step(
        active("u", *[site(f"u{n:02}") for n in range(pages.MOST_OPEN + 1)], start_time=at(30))
    )
    card = between(page(console, "/console/"), 'id="dispatch-u"', "</section>")
    assert "curtailed 0 of 11, 11 pending" in card
    assert "and 1 more site: on" in card and "sites" not in card.split("and 1 more")[1]
