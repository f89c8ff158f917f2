"""`etl serve`: Voltus's webhooks over real HTTP on loopback, the emulator as the API, a real
database; the poll set to 10 minutes, so that only a webhook explains an action."""

import gc
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import requests
from icalendar import Calendar
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text, update

from etl import serve
from etl.base.errors import ConfigError, EtlError
from etl.base.logs import log
from etl.base.timeutil import utcnow
from etl.handlers import ActionRequest
from etl.ingest import dispatches
from etl.jobs import runner
from etl.read import status
from etl.sandbox.emulator import Sandbox
from etl.store import schema
from tests.helpers import (
    STARTING_SECONDS,
    at,
    http_server,
    receive_posts,
    site,
    wait_for,
    wait_listening,
)
from tests.processes import InProcess, free_port
from tests.scenarios import Recorder, World, active

TOKEN = "t0ken-abcdefghijklmnop"
CHECK = status.Limits(timedelta(minutes=5), timedelta(hours=24))


class Service:
    """`serve.serve` in a thread, as `etl serve` runs it."""

    def __init__(
        self,
        world: World,
        token: str | None,
        host: str = "127.0.0.1",
        console_password: str | None = None,
        console: bool = True,
    ) -> None:
        self.world, self.stop = world, threading.Event()
        self.where = serve.listener(f"{host}:{free_port()}", token, console_password, console)
        self.url = f"http://127.0.0.1:{self.where.port}"
        self.webhook = self.url + self.where.webhook_path
        self.reported: list[runner.RunEvent] = []
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        w = self.world
        serve.serve(w.parts(self.stop), 600, self.where, CHECK, self.reported.append)

    def start(self) -> "Service":
        self.world.sandbox.dispatches = []  # none but those a test adds
        self.thread.start()
        try:
            wait_listening(self.url + "/healthz")
            wait_for(lambda: bool(self.reported), STARTING_SECONDS)  # the first poll is done
        except BaseException:
            self.close()  # left running, its listener would fail every later test's close
            raise
        return self

    def notify(self, dispatch_id: str, name: str = "dispatch.update") -> requests.Response:
        body = {"event": {"name": name}, "resource": f"/2022-04-15/dispatches/{dispatch_id}"}
        return requests.post(self.webhook, json=body, timeout=5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        # the listener's thread ended with its loop: its sockets were closed from inside it
        assert "etl-listen" not in [thread.name for thread in threading.enumerate()]


@pytest.fixture
def service(world: World) -> Iterator[Service]:
    running = Service(world, TOKEN).start()
    yield running
    running.close()


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """etl's log records from INFO up, as `etl serve` logs them (the fixture etl_log_restored
    resets the level)."""
    records: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = records.append  # type: ignore[method-assign,assignment]
    log.addHandler(catch)
    log.setLevel(logging.INFO)
    yield records
    log.removeHandler(catch)


def warnings(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if record.levelno == logging.WARNING]


UP, DOWN = {"status": "up"}, {"status": "down"}


def liveness(service: Service) -> tuple[int, Any]:
    answer = requests.get(service.url + "/healthz", timeout=10)
    return answer.status_code, answer.json()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the harness, not the store
def test_a_start_that_fails_leaves_nothing_running(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first /healthz too slow for its wait once left the service running, and every later
    test of that worker failed on its listener."""

    def timed_out(url: str) -> None:
        raise AssertionError("timed out")  # as wait_for does at its deadline

    monkeypatch.setattr(f"{__name__}.wait_listening", timed_out)
    service = Service(world, TOKEN)
    with pytest.raises(AssertionError, match="timed out"):
        service.start()
    assert not service.thread.is_alive()
    assert "etl-listen" not in [thread.name for thread in threading.enumerate()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the listener, not the store
def test_a_listener_that_dies_stops_the_service_with_an_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """waitress's loop raised (select() past descriptor 1024) and its thread died while the
    polling went on: webhooks, /healthz and the console dead, the process alive, so that no
    supervisor restarted it. Now the service stops at once and `etl serve` exits non-zero."""
    made = serve._server

    def dying_server(*args: Any) -> Any:
        server = made(*args)

        def run() -> None:
            time.sleep(0.2)
            raise ValueError("filedescriptor out of range in select()")

        server.run = run
        return server

    monkeypatch.setattr(serve, "_server", dying_server)
    world.sandbox.dispatches = []
    where = serve.listener(f"127.0.0.1:{free_port()}", TOKEN)
    started = time.monotonic()
    with pytest.raises(EtlError, match=r"the listener stopped \(ValueError: filedescriptor out"):
        serve.serve(world.parts(threading.Event()), 600, where, CHECK, lambda event: None)
    assert time.monotonic() - started < 10  # not at the next poll, 600 s on


def calls(world: World) -> list[tuple[str, str, str]]:
    return [(r.action, r.dispatch_id, r.site_id) for r in world.handler.requests]


def test_a_ping_is_answered_and_fetches_nothing(service: Service, world: World) -> None:
    before = len(world.sandbox.requests)
    answer = requests.post(service.webhook, json={"event": {"name": ""}, "resource": ""})
    assert answer.status_code == 200
    time.sleep(0.3)
    assert len(world.sandbox.requests) == before


def test_create_update_cancel_each_acted_on_at_once(service: Service, world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    started = time.monotonic()
    assert service.notify("d1", "dispatch.create").status_code == 202
    wait_for(lambda: calls(world) == [("curtail", "d1", "a")])
    assert time.monotonic() - started < 5  # the poll is 10 minutes away
    # its end is set in the past: the restore follows at once
    world.sandbox.dispatches = [active("d1", site("a"), end_time=at(-0.01))]
    service.notify("d1")
    wait_for(lambda: calls(world)[-1] == ("restore", "d1", "a"))
    # a new dispatch, then cancelled
    world.sandbox.dispatches = [active("d2", site("b"))]
    service.notify("d2", "dispatch.create")
    wait_for(lambda: calls(world)[-1] == ("curtail", "d2", "b"))
    world.sandbox.dispatches = [active("d2", site("b"), authorized=False)]
    service.notify("d2")
    wait_for(lambda: calls(world)[-1] == ("restore", "d2", "b"))
    assert len(calls(world)) == 4


def test_a_duplicate_delivery_is_one_action(service: Service, world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    for _ in range(3):
        assert service.notify("d1", "dispatch.create").status_code == 202
    wait_for(lambda: bool(calls(world)))
    time.sleep(0.5)
    service.notify("d1", "dispatch.create")  # again, later
    time.sleep(0.5)
    assert calls(world) == [("curtail", "d1", "a")]


def note(name: Any, resource: Any) -> dict[str, Any]:
    return {"event": {"name": name}, "resource": resource}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (note("dispatch.create", "https://evil.example/2022-04-15/dispatches/a"), 422),
        (note("dispatch.create", "/2022-04-15/sites/a"), 422),
        (note("dispatch.create", "/2022-04-15/dispatches/../x"), 422),
        (note("dispatch.create", "/2022-04-15/dispatches/a?b=1"), 422),
        (note("dispatch.create", "/2022-04-15/dispatches/a\n"), 422),
        (note("dispatch.create", ["/2022-04-15/dispatches/a"]), 422),
        (note("dispatch.delete", "/2022-04-15/dispatches/a"), 422),
        ({"event": "dispatch.create", "resource": "/2022-04-15/dispatches/a"}, 400),
        (["not", "an", "object"], 400),
        ("x" * 20_000, 413),
    ],
)
def test_anything_else_is_refused_and_no_request_leaves(
    service: Service, world: World, body: Any, status: int
) -> None:
    before = len(world.sandbox.requests)
    answer = requests.post(service.webhook, json=body, timeout=5)
    assert answer.status_code == status
    time.sleep(0.3)
    assert len(world.sandbox.requests) == before


@pytest.mark.parametrize(
    "resource",
    [
        "/2023-06-01/dispatches/d1",  # another version of the API: looked up in etl's own
        "{api}/2022-04-15/dispatches/d1",  # an absolute URL on the configured API
        "{API}/2020-12-30/dispatches/d1",  # its host written in capitals, an older version
    ],
)
def test_a_resource_of_any_version_or_on_the_apis_own_origin_is_looked_up(
    service: Service, world: World, resource: str
) -> None:
    world.sandbox.dispatches = [active("d1", site("a"))]
    api = world.sandbox.url
    named = resource.format(api=api, API=api.replace("http://", "HTTP://").upper())
    answer = requests.post(service.webhook, json=note("dispatch.create", named), timeout=5)
    assert answer.status_code == 202
    wait_for(lambda: calls(world) == [("curtail", "d1", "a")])
    assert "/2022-04-15/dispatches/d1" in world.sandbox.requests


@pytest.mark.parametrize(
    "resource",
    [
        "http://127.0.0.1:1/2022-04-15/dispatches/d1",  # the API's host, another port
        "http://user@{host}/2022-04-15/dispatches/d1",  # credentials for the API's host
        "https://{host}/2022-04-15/dispatches/d1",  # another scheme
        "{api}/2022-04-15/dispatches/d1?x=1",
        "{api}:99999/2022-04-15/dispatches/d1",  # not a port
        "//evil.example/2022-04-15/dispatches/d1",
    ],
)
def test_a_resource_elsewhere_is_refused_with_what_it_named(
    service: Service, world: World, resource: str
) -> None:
    api = world.sandbox.url
    named = resource.format(api=api, host=api.removeprefix("http://"))
    before = len(world.sandbox.requests)
    answer = requests.post(service.webhook, json=note("dispatch.create", named), timeout=5)
    assert answer.status_code == 422
    assert "not /<version>/dispatches/<id> on the configured API" in answer.json()["message"]
    assert "dispatches/d1" in answer.json()["message"]
    time.sleep(0.3)
    assert len(world.sandbox.requests) == before


def test_wrong_paths_and_methods(service: Service, world: World) -> None:
    body = {"event": {"name": "dispatch.create"}, "resource": "/2022-04-15/dispatches/a"}
    before = len(world.sandbox.requests)
    for path in ("/voltus/webhook", "/voltus/webhook/wrong-token-abcdefgh", "/voltus/webhook/"):
        assert requests.post(service.url + path, json=body, timeout=5).status_code == 404
    assert requests.get(service.webhook, timeout=5).status_code == 405
    for path in ("/healthz", "/status", "/metrics"):
        assert requests.post(service.url + path, timeout=5).status_code == 405
    assert requests.get(service.url + "/nothing", timeout=5).status_code == 404
    time.sleep(0.3)
    assert len(world.sandbox.requests) == before


def test_a_burst_is_a_handful_of_requests(service: Service, world: World) -> None:
    """The API answering in a second, as a loaded one does: the notifications that arrive while
    the first lookup is on its way are one listing, not a lookup each."""
    world.sandbox.dispatches = [active(f"d{i}", site(f"s{i}")) for i in range(20)]
    world.sandbox.faults.delay_seconds = 1.0
    before = len(world.sandbox.requests)
    threads = [threading.Thread(target=service.notify, args=(f"d{i % 20}",)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: len(calls(world)) == 20)
    time.sleep(0.3)
    made = len(world.sandbox.requests) - before
    assert made <= 10, world.sandbox.requests[before:]


def test_status_and_metrics(service: Service, world: World) -> None:
    verdict = requests.get(service.url + "/status", timeout=5)
    assert verdict.status_code == 200 and verdict.json()["code"] == 0
    world.sandbox.dispatches = [active("d1", site("a"))]
    service.notify("d1")
    # the handler's outcome recorded, not only the handler called
    wait_for(lambda: world.states().get(("curtail", "d1", "a")) == "succeeded")
    text = requests.get(service.url + "/metrics", timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("etl_webhooks_received_total", (("outcome", "accepted"),))] == 1
    assert samples[("etl_webhook_to_handler_seconds_count", ())] == 1
    assert samples[("etl_status", ())] == 0
    assert samples[("etl_actions", (("state", "succeeded"),))] == 1


def test_healthz_stays_up_while_the_status_is_critical(service: Service, world: World) -> None:
    """/healthz answered the verdict: a CRITICAL one made it 503, and a load balancer that
    followed it dropped every instance at once. It says up or down, and /status the verdict."""
    with world.engine.begin() as conn:  # the last listing is now an hour old
        an_hour_ago = utcnow() - timedelta(hours=1)
        conn.execute(update(schema.fetch_runs).values(finished_at=an_hour_ago))
    health = requests.get(service.url + "/healthz", timeout=5)
    assert health.status_code == 200 and health.content == b'{"status": "up"}'
    verdict = requests.get(service.url + "/status", timeout=5)
    assert verdict.status_code == 503 and verdict.json()["code"] == 2
    assert json.dumps(verdict.json()).count("CRITICAL") == 1


def test_healthz_is_down_while_the_store_fails_a_read_and_logs_why_once(
    service: Service, world: World, logged: list[logging.LogRecord]
) -> None:
    with world.engine.begin() as conn:  # what its read asks for is gone
        conn.execute(text("ALTER TABLE alembic_version RENAME TO alembic_hidden"))
    try:
        assert liveness(service) == (503, DOWN)
        assert liveness(service) == (503, DOWN)
    finally:
        with world.engine.begin() as conn:
            conn.execute(text("ALTER TABLE alembic_hidden RENAME TO alembic_version"))
    assert liveness(service) == (200, UP)
    (warning,) = warnings(logged)  # at the fall, not at each request
    assert warning.startswith("/healthz is down: database ") and "alembic_version" in warning
    assert "/healthz is up again" in [record.getMessage() for record in logged]


# a SQLite reader never waits for a lock (write-ahead logging)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_healthz_does_not_wait_for_a_store_that_hangs(service: Service, world: World) -> None:
    with world.engine.connect() as holder, holder.begin():
        # a migration's lock: the read waits for it (10 s, the lock timeout)
        holder.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        asked = time.monotonic()
        assert liveness(service) == (503, DOWN)
        assert liveness(service) == (503, DOWN)
        assert time.monotonic() - asked < 2 * serve.STORE_SECONDS + 1
    wait_for(lambda: liveness(service) == (200, UP))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the loops, not the store
def test_healthz_is_down_when_a_loop_has_not_turned_within_its_bound(
    world: World, monkeypatch: pytest.MonkeyPatch, logged: list[logging.LogRecord]
) -> None:
    # the poll, 600 s apart, is silent past this; the webhook's loop turns every 0.5 s
    monkeypatch.setattr(serve, "_turn_bound", lambda every, settings: 2.0)
    service = Service(world, TOKEN).start()
    try:
        wait_for(lambda: liveness(service)[0] == 503)
        assert liveness(service) == (503, DOWN)
    finally:
        service.close()
    (warning,) = warnings(logged)
    assert warning.startswith("/healthz is down: the poll loop has not turned for ")


class SlowRecorder(Recorder):
    """A handler that takes its time: a site controller a little slow to answer."""

    def __call__(self, request: ActionRequest) -> str:
        time.sleep(0.25)
        return super().__call__(request)


def test_healthz_stays_up_while_a_long_pass_works_through_its_actions(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass of 200 sites behind a slow gateway outlasts any bound on a loop's turn: /healthz
    went down mid-event, dropping the instance from its load balancer while it worked. Here a
    pass of 3 s outlasts a bound of 1 s."""
    monkeypatch.setattr(serve, "_turn_bound", lambda every, settings: 1.0)
    world.handler = SlowRecorder()
    world.settings = replace(world.settings, workers=1)
    service = Service(world, TOKEN).start()
    try:
        wait_for(lambda: liveness(service)[0] == 503)  # the poll, 600 s apart, is past its bound
        world.sandbox.dispatches = [active("d1", *(site(f"s{i}") for i in range(12)))]
        assert service.notify("d1").status_code == 202
        wait_for(lambda: len(world.handler.requests) >= 6)  # past the bound, under way
        assert liveness(service)[0] == 200
        wait_for(lambda: len(world.handler.requests) == 12, seconds=30)
        wait_for(lambda: liveness(service)[0] == 503)  # done: the poll is still silent
    finally:
        service.close()


@pytest.mark.parametrize(
    ("listen", "token", "message"),
    [
        ("0.0.0.0:8080", None, "refusing to listen on 0.0.0.0 without ETL_WEBHOOK_TOKEN"),
        ("192.168.1.5:8080", None, "without ETL_WEBHOOK_TOKEN"),
        ("127.0.0.1:8080", "short", "ETL_WEBHOOK_TOKEN must be"),
        ("127.0.0.1:8080", "has/slash-abcdefghijkl", "ETL_WEBHOOK_TOKEN must be"),
        ("127.0.0.1", None, "not HOST:PORT"),
        ("127.0.0.1:99999", None, "not HOST:PORT"),
        ("127.0.0.1:\u00b2", None, "not HOST:PORT"),  # a digit to isdigit(), not to int()
        ("0.0.0.0:8080", TOKEN, "refusing to serve the console on 0.0.0.0 without ETL_CONSOLE_PA"),
        ("10.0.0.1:8080", TOKEN, "or ETL_CONSOLE=off"),
    ],
)
def test_listening_beyond_loopback_needs_a_token_and_a_console_password(
    listen: str, token: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        serve.listener(listen, token)
    beyond = serve.listener("0.0.0.0:8080", TOKEN, console=False)
    assert beyond.webhook_path == f"/voltus/webhook/{TOKEN}" and not beyond.console.enabled
    assert serve.listener("0.0.0.0:8080", TOKEN, "pass").console.password == "pass"
    assert serve.listener("[::1]:8080", None).host == "::1"


def test_webhooks_are_listed_registered_and_deleted(cli: InProcess, sandbox: Sandbox) -> None:
    assert cli.ok("webhooks", "list") == "(no webhooks)\n"
    pinged: list[bytes] = []
    with http_server(receive_posts(200, pinged)) as listener:
        url = f"{listener}/voltus/webhook/{TOKEN}"
        registered = cli.ok("webhooks", "register", url)
    assert registered == (
        f"registered wh1  {listener}/voltus/webhook/***  dispatch.create, dispatch.update\n"
    )
    # the reference's test request, answered 2xx before the registration is made
    assert [json.loads(body) for body in pinged] == [{"event": {"name": ""}, "resource": ""}]
    assert sandbox.webhooks["wh1"]["url"] == url  # the real one went to the API
    assert TOKEN not in cli.ok("webhooks", "list")
    assert cli.ok("webhooks", "delete", "wh1") == "deleted webhook wh1\n"
    missing = cli("webhooks", "delete", "wh1")
    assert missing.returncode == 3 and "no webhook 'wh1'" in missing.stderr
    assert cli("webhooks", "register", "ftp://x").returncode == 2
    assert [r for r in sandbox.requests if r.startswith(("POST", "DELETE"))] == [
        "POST /2022-04-15/webhooks",
        "DELETE /2022-04-15/webhooks/wh1",
        "DELETE /2022-04-15/webhooks/wh1",
    ]


@pytest.mark.parametrize("answer", [500, None])  # an error, and nothing listening
def test_a_listener_that_fails_the_test_request_is_not_registered(
    cli: InProcess, sandbox: Sandbox, answer: int | None
) -> None:
    """As Voltus does: a broken proxy fails the registration, not the first dispatch."""
    if answer is None:
        url = f"http://127.0.0.1:{free_port()}/voltus/webhook/{TOKEN}"
        result = cli("webhooks", "register", url)
    else:
        with http_server(receive_posts(answer, [])) as listener:
            result = cli("webhooks", "register", f"{listener}/voltus/webhook/{TOKEN}")
    assert result.returncode == 3 and "the test request to the webhook URL failed" in result.stderr
    assert TOKEN not in result.stderr and sandbox.webhooks == {}


def test_a_registration_is_sent_once_even_when_the_api_fails(
    cli: InProcess, sandbox: Sandbox
) -> None:
    sandbox.faults.statuses = [503]
    result = cli("webhooks", "register", "http://127.0.0.1:9/voltus/webhook")  # not pinged
    assert result.returncode == 3 and "failed after 1 attempts: HTTP 503" in result.stderr
    assert sandbox.requests.count("POST /2022-04-15/webhooks") == 1 and sandbox.webhooks == {}


def test_the_emulator_pushes_and_etl_acts_end_to_end(service: Service, world: World) -> None:
    """Registered through the API, the emulator POSTs each change; nothing else fetches."""
    world.client.register_webhook(service.webhook)
    world.sandbox.dispatches = [active("d1", site("a"))]
    wait_for(lambda: calls(world) == [("curtail", "d1", "a")])
    world.sandbox.dispatches = [active("d1", site("a"), authorized=False)]
    wait_for(lambda: calls(world)[-1] == ("restore", "d1", "a"))
    assert world.sandbox.pushed == [
        ("dispatch.create", "d1", 202),
        ("dispatch.update", "d1", 202),
    ]


def test_a_429_holds_every_waiting_lookup(service: Service, world: World) -> None:
    world.sandbox.dispatches = [active("d1", site("a")), active("d2", site("b"))]
    with world.sandbox.lock:
        world.sandbox.faults.statuses = [429]
        world.sandbox.faults.retry_after = "1"
    sent = time.monotonic()
    service.notify("d1")
    service.notify("d2")
    wait_for(lambda: len(calls(world)) == 2)
    assert time.monotonic() - sent >= 1  # neither lookup went ahead during the pause
    lookups = [r for r in world.sandbox.requests if r.startswith("/2022-04-15/dispatches/")]
    assert len(lookups) <= 3  # the refused one, then one each


# waitress leaves its half-made server's socket to the garbage collector when the bind fails
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_port_in_use_is_one_line(service: Service, world: World) -> None:
    taken = serve.listener(f"127.0.0.1:{service.where.port}", None)
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{taken.port}"):
        serve.serve(world.parts(threading.Event()), 600, taken, CHECK, lambda _: None)
    gc.collect()  # its leftovers now, while this test's warning filter holds


def calendar_events(answer: requests.Response) -> list[Any]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/calendar; charset=utf-8"
    return Calendar.from_ical(answer.content).walk("VEVENT")


def test_the_calendar_is_served_on_loopback_and_follows_the_store(world: World) -> None:
    service = Service(world, TOKEN).start()
    try:
        assert calendar_events(requests.get(service.url + "/calendar.ics", timeout=5)) == []
        world.sandbox.dispatches = [active("d1", site("a"))]
        dispatches.fetch(world.engine, world.client)
        (event,) = calendar_events(requests.get(service.url + "/calendar.ics", timeout=5))
        assert str(event["uid"]).startswith("d1@")
        assert requests.post(service.url + "/calendar.ics", timeout=5).status_code == 405
    finally:
        service.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_with_a_password_the_calendar_and_status_ask_for_it_in_constant_time_anywhere(
    world: World, host: str
) -> None:
    service = Service(world, TOKEN, host=host, console_password="s3cret-pass").start()
    try:
        for path in ("/calendar.ics", "/status"):
            url = service.url + path
            refused = requests.get(url, timeout=5)
            assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
            assert requests.get(url, auth=("etl", "wrong"), timeout=5).status_code == 401
            bad = {"Authorization": "Basic !!not-base64!!"}
            assert requests.get(url, headers=bad, timeout=5).status_code == 401
        url = service.url + "/calendar.ics"
        assert calendar_events(requests.get(url, auth=("anyone", "s3cret-pass"), timeout=5)) == []
        verdict = requests.get(service.url + "/status", auth=("anyone", "s3cret-pass"), timeout=5)
        assert verdict.status_code == 200 and verdict.json()["code"] == 0
        assert liveness(service) == (200, UP)  # no password: it tells nothing more
    finally:
        service.close()


def test_with_the_console_off_the_webhook_alone_listens_beyond_loopback(world: World) -> None:
    service = Service(world, TOKEN, host="0.0.0.0", console=False).start()
    try:
        for path in ("/calendar.ics", "/console/", "/console/history", "/console/nope", "/status"):
            answer = requests.get(service.url + path, timeout=5)
            assert answer.status_code == 404 and answer.text == "not found\n"  # no health shown
        assert liveness(service) == (200, UP)
        world.sandbox.dispatches = [active("d1", site("a"))]
        assert service.notify("d1").status_code == 202
        wait_for(lambda: calls(world) == [("curtail", "d1", "a")])
    finally:
        service.close()


def test_an_empty_console_password_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="ETL_CONSOLE_PASSWORD is empty"):
        serve.listener("127.0.0.1:8080", None, "")
    with pytest.raises(ConfigError, match="ETL_CONSOLE_PASSWORD is empty"):
        serve.console_listener("127.0.0.1:8080", "")


def test_the_start_line_names_the_webhook_path_with_its_token_masked(
    world: World, logged: list[logging.LogRecord]
) -> None:
    service = Service(world, TOKEN, console_password="pw").start()
    try:
        lines = [record.getMessage() for record in logged]
        started = [line for line in lines if line.startswith("listening on")]
        assert started == [
            f"listening on http://127.0.0.1:{service.where.port}: webhook /voltus/webhook/***, "
            "console /console/ and /status (password), /healthz, /metrics"
        ]
        assert not any(TOKEN in line or "pw" in line.split(":")[-1] for line in lines)
    finally:
        service.close()
    assert logged[-1].getMessage() == "stopped"


def test_head_answers_the_headers_alone_on_every_route_and_the_connection_goes_on(
    world: World,
) -> None:
    """HEAD had the body too: a client keeping its connection alive read that body as the start
    of its next answer."""
    service = Service(world, TOKEN).start()
    world.sandbox.dispatches = [active("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    routes = {
        "/console/": 200,
        "/console/dispatch?id=d1": 200,
        "/console/site?id=a": 200,
        "/console/history": 200,
        "/console/history/dispatches.csv": 200,
        "/console/nope": 404,
        "/console/dispatch?id=d1&page=0": 400,
        "/calendar.ics": 200,
        "/healthz": 200,
        "/status": 200,
        "/metrics": 200,
        f"/voltus/webhook/{TOKEN}": 405,
        "/voltus/webhook/wrong": 404,
        "/nowhere": 404,
    }
    connection = http.client.HTTPConnection("127.0.0.1", service.where.port, timeout=10)
    try:
        connection.connect()
        one = connection.sock
        for path, code in routes.items():
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert (head.status, head.read()) == (code, b""), path
            connection.request("GET", path)
            got = connection.getresponse()
            body = got.read()
            assert got.status == code, path
            length = head.getheader("Content-Length", "")
            assert length.isdigit(), path
            if path not in ("/status", "/metrics"):  # not ages that tick between the two
                assert int(length) == len(body), path
        assert connection.sock is one  # the same connection all along
    finally:
        connection.close()
        service.close()


def test_console_requests_beyond_the_cap_are_answered_at_once_to_ask_again() -> None:
    """Six 5,000-site pages at once held every server thread, and /healthz, for 56 s."""
    inside, leave = threading.Semaphore(0), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        inside.release()
        leave.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    capped = serve.AtOnce(2).wrap(slow)

    def ask() -> tuple[str, dict[str, str], bytes]:
        answered: list[Any] = []
        body = b"".join(capped({"REQUEST_METHOD": "GET"}, lambda *a: answered.extend(a)))
        return answered[0], dict(answered[1]), body

    drawing = [threading.Thread(target=ask) for _ in range(2)]
    for thread in drawing:
        thread.start()
    for _ in drawing:
        assert inside.acquire(timeout=5)
    started = time.monotonic()
    status_line, headers, body = ask()
    assert time.monotonic() - started < 0.5  # at once
    assert status_line == "503 Service Unavailable" and headers["Retry-After"] == "1"
    assert body == b"busy drawing other pages: ask again in a second\n"
    leave.set()
    for thread in drawing:
        thread.join(timeout=5)
    assert ask()[0] == "200 OK"  # their places are free again


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the server, not the store
def test_metrics_and_status_share_the_cap_with_the_console(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/metrics needs no password and /status reads the whole status: without the cap, four
    slow ones at once held every thread, /healthz's too."""
    inside, leave = threading.Semaphore(0), threading.Event()
    exposition = serve.metrics.exposition

    def slow(*args: Any) -> str:
        inside.release()
        leave.wait(10)
        return exposition(*args)

    monkeypatch.setattr(serve.metrics, "exposition", slow)
    service = Service(world, TOKEN).start()
    try:
        scraping = [
            threading.Thread(target=requests.get, args=(service.url + "/metrics",), daemon=True)
            for _ in range(serve.DRAWN_AT_ONCE)
        ]
        for thread in scraping:
            thread.start()
        for _ in scraping:
            assert inside.acquire(timeout=5)
        for path in ("/metrics", "/status", "/console/"):
            assert requests.get(service.url + path, timeout=5).status_code == 503, path
        assert liveness(service)[0] in (200, 503)  # answered: a thread was free for it
        leave.set()
        for thread in scraping:
            thread.join(timeout=10)
        assert requests.get(service.url + "/metrics", timeout=5).status_code == 200
    finally:
        leave.set()
        service.close()
