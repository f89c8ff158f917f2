"""Notifications through Apprise to a real receiver on loopback (`json://`), on both databases:
each told once, in the program's time zone with sites by name (ten, then how many more) and
totals, with the Apprise type of its severity; an action failing told at its first failed attempt,
its error masked, and again when it clears; a service that does not take one retried with
backoff, alone, never failing the run nor holding back the others, said by a warning and by `etl
status`, and given up after 6 hours, loudly; the URL's secret never kept or shown."""

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, Row, select, update

from etl.base.config import ProcessorSettings
from etl.base.timeutil import format_rfc3339, utcnow
from etl.handlers import ActionRequest, HandlerFailed
from etl.ingest import dispatches
from etl.jobs import notify, runner
from etl.read import status
from etl.read.status import Health
from etl.sandbox.emulator import Sandbox
from etl.store import schema
from etl.store.db import make_engine, write_transaction
from etl.store.identity import key_namespace
from tests.helpers import at, dispatch, http_server, receive_posts, site, wait_for
from tests.processes import InProcess
from tests.scenarios import Recorder, World, active, ended
from tests.store.test_telemetry import hand_computed
from tests.unit.test_status_judge import HEALTHY

SECRET = "t0ken-SECRET-42"
CHECK = (timedelta(days=1), timedelta(days=1))


def refuse_posts_with(marker: bytes, received: list[bytes]) -> type[BaseHTTPRequestHandler]:
    """A receiver that refuses (400) a post whose body holds the marker and takes the others, as
    Telegram refuses a message with a `<` in a site's name: a service that takes all but one."""

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(body)
            self.send_response(400 if marker in body else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Refusing


class Receiver:
    """A loopback service taking Apprise's JSON posts, answering `status`, or refusing only the
    posts that hold `refused`."""

    def __init__(self, status: int = 200, refused: bytes | None = None) -> None:
        self.bodies: list[bytes] = []
        handler = (
            receive_posts(status, self.bodies)
            if refused is None
            else refuse_posts_with(refused, self.bodies)
        )
        self.server = http_server(handler)
        self.base = self.server.__enter__()
        host_port = self.base.removeprefix("http://")
        self.url = f"json://{host_port}/hook?token={SECRET}"

    @property
    def told(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]

    def close(self) -> None:
        self.server.__exit__(None, None, None)


@pytest.fixture
def receiver() -> Any:
    receiving = Receiver()
    yield receiving
    receiving.close()


@pytest.fixture
def down() -> Any:
    failing = Receiver(status=500)
    yield failing
    failing.close()


def turn(world: World, urls: str, now: Any = None, test: bool = False) -> notify.NotifySummary:
    settings = ProcessorSettings(notify_urls=urls, notify_test=test)
    return notify.run(world.engine, settings, now or utcnow())


def notes(engine: Engine) -> Sequence[Row]:
    with engine.connect() as conn:
        return conn.execute(select(schema.notifications).order_by("id")).all()


def test_a_dispatch_created_is_told_once_in_its_programs_time_zone(
    world: World, receiver: Receiver
) -> None:
    start = utcnow().replace(second=0, microsecond=0) + timedelta(hours=2)
    world.sandbox.dispatches = [
        dispatch(
            "d1", site("a", 12, name="Bakery"), site("b", None, name="Mill"),
            start_time=format_rfc3339(start), end_time=format_rfc3339(start + timedelta(hours=1)),
        ),
        dispatch("t1", site("a", 12, name="Bakery"), test=True),
        dispatch("c1", site("a", 12, name="Bakery"), authorized=False),  # nothing to curtail
    ]  # fmt: skip
    dispatches.fetch(world.engine, world.client)
    summary = turn(world, receiver.url)
    assert (summary.planned, summary.sent, summary.failed, summary.waiting) == (1, 1, 0, 0)
    (told,) = receiver.told
    local = start.astimezone(ZoneInfo("US/Central"))
    assert told["title"] == (
        f"Dispatch d1 (MISO - Operating Reserves): curtail 2 sites (12 kW), "
        f"{local.strftime(notify.TIME)} to {(local + timedelta(hours=1)).strftime(notify.TIME)}"
    )
    assert told["message"] == "2 sites (12 kW): Bakery (12 kW), Mill"
    assert turn(world, receiver.url).planned == 0 and len(receiver.told) == 1  # never twice


def test_a_dispatch_first_seen_after_its_end_is_not_told(world: World, receiver: Receiver) -> None:
    gone = utcnow() - timedelta(hours=2)
    world.sandbox.dispatches = [
        dispatch("old", site("a"), start_time=format_rfc3339(gone),
                 end_time=format_rfc3339(gone + timedelta(minutes=30))),
    ]  # fmt: skip
    dispatches.fetch(world.engine, world.client)
    assert turn(world, receiver.url).planned == 0 and receiver.told == []


def test_a_test_dispatch_is_told_only_when_asked(world: World, receiver: Receiver) -> None:
    world.sandbox.dispatches = [dispatch("t1", site("a"), test=True)]
    dispatches.fetch(world.engine, world.client)
    assert turn(world, receiver.url, test=True).sent == 1
    assert receiver.told[0]["title"].startswith("TEST Dispatch t1 ")


def test_a_moved_and_a_cancelled_dispatch_are_told(world: World, receiver: Receiver) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a", name="Bakery"))]
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    later = format_rfc3339(utcnow() + timedelta(hours=3))
    moved = dispatch("d1", site("a", name="Bakery"), end_time=later)
    world.sandbox.dispatches = [moved]
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    world.sandbox.dispatches = [{**moved, "authorized": False}]
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    titles = [t["title"] for t in receiver.told]
    assert titles[0].startswith("Dispatch d1 (MISO - Operating Reserves): curtail 1 site (10 kW), ")
    assert titles[1].startswith("Dispatch d1 (MISO - Operating Reserves) moved: now ")
    assert titles[2] == "Dispatch d1 (MISO - Operating Reserves) cancelled"
    assert len(titles) == 3


def test_a_dispatch_created_and_cancelled_before_a_turn_is_told_as_cancelled_only(
    world: World, receiver: Receiver
) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    world.sandbox.dispatches = [dispatch("d1", site("a"), authorized=False)]
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    assert [t["title"] for t in receiver.told] == [
        "Dispatch d1 (MISO - Operating Reserves) cancelled"
    ]


def test_an_action_that_failed_is_told_with_its_site_and_its_error_masked_and_bounded(
    world: World, receiver: Receiver
) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a", name="Bakery"))]
    dispatches.fetch(world.engine, world.client)
    said = f"relay 3 did not answer\nat all: POST https://ops:{SECRET}@relay.example/x " * 20
    with write_transaction(world.engine) as conn:  # its last attempt failed: the action too
        conn.execute(
            schema.events.insert().values(
                occurred_at=utcnow(), kind="action_failed", dispatch_id="d1", site_id="a",
                details={"action": "curtail", "error": said},
            )
        )  # fmt: skip
    turn(world, receiver.url)
    told = receiver.told[-1]
    assert (told["title"], told["type"]) == (
        "Curtail of Bakery (a) for dispatch d1 failed",
        "failure",
    )
    error, audit = told["message"].split("\n")
    assert error.startswith(
        "relay 3 did not answer\\x0aat all: POST https://***@relay.example/x relay 3 "
    )
    assert SECRET not in error and len(error) <= notify.ERROR_CHARS and error.endswith("…")
    assert audit == "(etl audit --dispatch d1)"


def test_a_service_that_does_not_take_it_is_retried_later_and_status_says_so(
    world: World,
) -> None:
    down = Receiver(status=500)
    try:
        world.sandbox.dispatches = [dispatch("d1", site("a")), dispatch("d2", site("b"))]
        dispatches.fetch(world.engine, world.client)
        now = utcnow()
        first = turn(world, down.url, now)
        assert (first.planned, first.sent, first.failed, first.waiting) == (2, 0, 1, 2)
        assert len(down.bodies) == 1  # it stopped at the first failure
        failed = notes(world.engine)[0]
        assert failed.attempts == 1 and failed.next_attempt_at == now + notify.FIRST_RETRY
        assert SECRET not in (failed.last_error or "")
        second = notes(world.engine)[1]  # not offered: due at the next turn, no attempt spent
        assert second.attempts == 0 and second.next_attempt_at == now
        again = turn(world, down.url, now + timedelta(seconds=10))
        assert again.failed == 1 and len(down.bodies) == 2  # the second; the first not before 30 s
        problems = status.check(world.engine, *CHECK).problems
        (warning,) = [p for p in problems if "notifications" in p]
        assert warning.startswith("WARNING: 2 notifications have not reached their service")
        assert SECRET not in warning
    finally:
        down.close()
    up = Receiver()
    try:
        later = turn(world, up.url, now + timedelta(seconds=10) + notify.FIRST_RETRY)
        assert (later.sent, later.waiting) == (2, 0)
        assert sorted(t["title"].split()[1] for t in up.told) == ["d1", "d2"]
    finally:
        up.close()


def test_what_happened_before_notifications_were_on_is_not_told(
    world: World, receiver: Receiver
) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    with write_transaction(world.engine) as conn:
        conn.execute(update(schema.events).values(occurred_at=utcnow() - timedelta(days=2)))
    assert turn(world, receiver.url).planned == 0 and receiver.told == []


def test_etl_run_tells_and_no_output_shows_the_urls_secret(
    cli: InProcess, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ETL_NOTIFY_URLS", receiver.url)
    ran = cli("run")
    assert ran.returncode == 0, ran.stderr
    # the built-in scenario's two real dispatches to curtail (not its test one, nor the one
    # cancelled before it was seen)
    assert "notifications: 2 planned, 2 sent" in ran.stderr
    assert SECRET not in ran.stdout + ran.stderr
    assert receiver.told[0]["title"].startswith("Dispatch asdf ")
    monkeypatch.setenv("ETL_NOTIFY_URLS", "not-an-apprise-url")
    refused = cli("run")
    assert refused.returncode == 0  # a notification problem never fails the run
    assert "notifications: 0 planned, 0 sent, 0 not taken" in refused.stderr


def test_a_run_tells_after_its_pass(world: World, receiver: Receiver) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    world.settings = replace(world.settings, notify_urls=receiver.url)
    events = list(runner.run_once(world.parts(threading.Event())))
    assert [e.sent for e in events if isinstance(e, notify.NotifySummary)] == [1]


def test_a_notification_another_notifier_is_sending_is_left_to_it(
    world: World, receiver: Receiver
) -> None:
    """etl serve beside a cron job: each notification is sent by the one that took it."""
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    now = utcnow()
    settings = ProcessorSettings(notify_urls=receiver.url)
    assert notify.plan(world.engine, settings, now) == 1
    (planned,) = notes(world.engine)
    assert notify._hold(world.engine, planned.id, now)  # the other notifier took it
    assert not notify._hold(world.engine, planned.id, now)  # ... and nobody else can
    assert turn(world, receiver.url, now).sent == 0 and receiver.told == []
    assert turn(world, receiver.url, now + notify.HOLD).sent == 1  # it died holding it


def health(verdict: str, *problems: str, under: Any = ()) -> status.Status:
    """A status judged so, its other facts those of a healthy store."""
    return replace(
        HEALTHY, code=Health[verdict], problems=list(problems), under_delivered=list(under)
    )


def test_the_status_is_told_when_it_turns_critical_and_back_to_ok(
    world: World, receiver: Receiver
) -> None:
    urls = ProcessorSettings(notify_urls=receiver.url)
    seen = [
        health("OK"),  # the first verdict, OK: nothing to tell
        health("CRITICAL", "WARNING: x", "CRITICAL: no successful fetch for 12 minutes"),
        health("CRITICAL", "CRITICAL: still"),  # told already
        health("WARNING", "WARNING: 1 action missed"),  # on the way back: not yet OK
        health("OK"),
        health("OK"),
        health("WARNING", "WARNING: y"),  # no CRITICAL: nothing to tell
    ]
    planned = [notify.run(world.engine, urls, utcnow(), verdict).planned for verdict in seen]
    assert planned == [0, 1, 0, 0, 1, 0, 0]
    assert [(t["title"], t["message"], t["type"]) for t in receiver.told] == [
        (
            "etl status is CRITICAL: no successful fetch for 12 minutes",  # the CRITICAL, once
            "WARNING: x\nCRITICAL: no successful fetch for 12 minutes",
            "failure",
        ),
        ("etl status is OK again", "Every check passes again (etl status).", "success"),
    ]
    assert [n.kind for n in notes(world.engine)] == ["status_critical", "status_ok"]
    assert all(n.event_id is None and n.subject for n in notes(world.engine))


def test_a_site_under_delivering_is_told_once_by_name(world: World, receiver: Receiver) -> None:
    start, _ = hand_computed(world, curtailed_kw=95, site_id="a")  # 4.7 of 20 kW: 23 %
    found = status.Limits(timedelta(days=1)).check(world.engine)
    delivered = 100 - (2 * 100 + 28 * 95) / 30
    ((dispatch_id, site_id, pct),) = found.under_delivered
    assert (dispatch_id, site_id) == ("p1", "a") and pct == pytest.approx(100 * delivered / 20)
    settings = ProcessorSettings(notify_urls=receiver.url)
    assert notify.run(world.engine, settings, utcnow(), found).sent == 1
    assert notify.run(world.engine, settings, utcnow(), found).planned == 0  # once
    (told,) = receiver.told
    assert told["title"] == (
        "Site a (a) delivered 23% of its commitment for dispatch p1 (MISO - Operating Reserves)"
    )
    local = start.astimezone(ZoneInfo("US/Central")).strftime("%a %d %b %H:%M CST")
    assert told["message"].startswith(f"Measured over {local} to ")
    assert told["message"].endswith("(etl report performance --site a)")


def test_etl_run_tells_the_status_turning_critical(
    cli: InProcess, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    monkeypatch.setenv("ETL_NOTIFY_URLS", receiver.url)
    assert cli("run").returncode == 0
    # the API refusing every request, saying to try again at once: no fetch succeeds, and the
    # client's retries wait for nothing
    sandbox.faults.statuses, sandbox.faults.retry_after = [429] * 20, "0"
    with write_transaction(make_engine(cli.url)) as conn:  # ... and the last one long ago
        conn.execute(update(schema.fetch_runs).values(finished_at=utcnow() - timedelta(hours=1)))
    assert cli("run").returncode == 3
    titles = [t["title"] for t in receiver.told]
    # the minutely job, one process a minute, tells it too (the verdict told is in the store)
    assert titles[-1] == "etl status is CRITICAL: the last successful fetch is 60m old (limit 5m)"


def test_a_service_that_took_a_notification_is_not_sent_it_again(
    world: World, receiver: Receiver, down: Receiver
) -> None:
    """One working and one failing service: the retries go to the failing one alone."""
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    at = utcnow()
    for _ in range(5):
        turn(world, f"{receiver.url},{down.url}", at)
        at = notes(world.engine)[0].next_attempt_at
    assert len(receiver.told) == 1 and len(down.bodies) == 5
    (waiting,) = notes(world.engine)
    assert waiting.attempts == 5 and waiting.sent_at is None
    assert waiting.last_error.startswith("#2 (json): ") and SECRET not in waiting.last_error


def test_a_failing_service_does_not_hold_back_the_others(
    world: World, receiver: Receiver, down: Receiver
) -> None:
    world.sandbox.dispatches = [dispatch(f"d{i}", site("a")) for i in range(3)]
    dispatches.fetch(world.engine, world.client)
    summary = turn(world, f"{down.url} {receiver.url}")
    assert (summary.sent, summary.failed, summary.waiting) == (3, 1, 3)
    assert len(receiver.told) == 3 and len(down.bodies) == 1  # one timeout a turn


def test_a_notification_not_taken_by_every_service_in_time_is_given_up_loudly(
    world: World, receiver: Receiver, down: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    urls, now = f"{receiver.url},{down.url}", utcnow()
    turn(world, urls, now)
    late = now + notify.GIVE_UP
    assert turn(world, urls, late).waiting == 0
    (given_up,) = notes(world.engine)
    assert given_up.given_up_at == late and given_up.sent_at is None
    assert given_up.last_error.startswith("not taken by every service within 6h: #2 (json): ")
    assert SECRET not in given_up.last_error
    (said,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert said.getMessage() == (
        f"notifications: given up on {given_up.title!r}: {given_up.last_error}"
    )
    turn(world, urls, late + notify.LONGEST_WAIT)
    assert len(receiver.told) == 1 and len(down.bodies) == 1  # never tried again
    problems = status.check(world.engine, *CHECK).problems
    assert [p for p in problems if "notifications" in p] == [
        f"WARNING: 1 notifications were given up in the last 24h: {given_up.last_error}"
    ]


def test_services_are_known_by_a_hash_of_their_url_as_the_list_is_edited(
    world: World, receiver: Receiver, down: Receiver
) -> None:
    """A service added later is not sent what every service took; one removed no longer holds
    a notification back; one moved in the list is still the one that took it."""
    added = Receiver()
    try:
        world.sandbox.dispatches = [dispatch("d1", site("a"))]
        dispatches.fetch(world.engine, world.client)
        now = utcnow()
        turn(world, receiver.url, now)
        world.sandbox.dispatches.append(dispatch("d2", site("a")))
        dispatches.fetch(world.engine, world.client)
        turn(world, f"{receiver.url} {down.url} {added.url}", now)
        assert [t["title"].split()[1] for t in added.told] == ["d2"]
        assert notes(world.engine)[1].sent_at is None  # down did not take it
        later = turn(world, f"{added.url},{receiver.url}", now + notify.FIRST_RETRY)
        assert (later.sent, later.waiting) == (0, 0)  # down was removed: d2 is done
        assert [t["title"].split()[1] for t in receiver.told] == ["d1", "d2"]
        with world.engine.connect() as conn:
            taken = conn.execute(select(schema.notification_deliveries)).all()
        assert len(taken) == 3 and {len(t.service) for t in taken} == {16}
        assert all(SECRET not in t.service for t in taken)
    finally:
        added.close()


def test_a_delivery_recorded_twice_is_one(world: World, receiver: Receiver) -> None:
    """A notifier whose hold on a notice ran out while a slow service took it: another notifier
    sent it too, and the second record of the same delivery must not fail the turn."""
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    assert turn(world, receiver.url).sent == 1
    (notice,) = notes(world.engine)
    with world.engine.connect() as conn:
        (service,) = notify._services(receiver.url, key_namespace(conn))
    notify._taken(world.engine, notice.id, service, utcnow())  # the other notifier's record
    with world.engine.connect() as conn:
        (delivery,) = conn.execute(select(schema.notification_deliveries)).all()
    assert (delivery.notification_id, delivery.service) == (notice.id, service.key)


def test_a_notification_a_service_refuses_does_not_hold_back_the_others_it_takes(
    world: World,
) -> None:
    """The refused one, tried first (the oldest) and failing every turn, once held the others
    back with it, never offered, until all were given up together."""
    picky = Receiver(refused=b"<North>")
    try:
        world.sandbox.dispatches = [
            dispatch("d1", site("a", name="Bakery <North>")),
            dispatch("d2", site("b", name="Mill")),
            dispatch("d3", site("c", name="Dairy")),
        ]
        dispatches.fetch(world.engine, world.client)
        now = utcnow()
        for hour in range(3):
            turn(world, picky.url, now + hour * notify.LONGEST_WAIT)
        taken = [n.title.split()[1] for n in notes(world.engine) if n.sent_at is not None]
        assert taken == ["d2", "d3"]
        refused, *_ = notes(world.engine)
        assert refused.sent_at is None and refused.attempts == 3  # tried, and refused, each turn
        assert refused.last_error.startswith("#1 (json): ")
        told = [json.loads(body)["title"].split()[1] for body in picky.bodies]
        assert sorted(told) == ["d1", "d1", "d1", "d2", "d3"]  # each taken once
    finally:
        picky.close()


def test_a_list_of_no_url_sends_nothing_and_says_so(
    world: World, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    now = utcnow()
    summary = turn(world, " , ", now)
    assert (summary.planned, summary.sent, summary.waiting) == (1, 0, 1)
    (said,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert said.getMessage() == "notifications: ETL_NOTIFY_URLS holds no URL; none is sent"
    assert turn(world, receiver.url, now).sent == 1  # it waited for a URL
    assert [t["title"].split()[1] for t in receiver.told] == ["d1"]


def test_a_service_is_kept_as_a_keyed_hash_of_its_url_not_its_plain_sha256(
    world: World, receiver: Receiver
) -> None:
    """The tables are read with SQL: a plain hash of a URL with a weak password in it could be
    guessed offline, one keyed with the store's own secret cannot."""
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    world.sandbox.dispatches.append(dispatch("d2", site("a")))
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    with world.engine.connect() as conn:
        keys = conn.execute(select(schema.notification_deliveries.c.service)).scalars().all()
    assert len(keys) == 2 and len(set(keys)) == 1  # the same service at each turn
    assert keys[0] != hashlib.sha256(receiver.url.encode()).hexdigest()[:16]


def test_each_notice_has_the_apprise_type_of_its_severity(world: World, receiver: Receiver) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    told_of: tuple[str, ...] = ("dispatch_end_time_moved", "dispatch_cancelled")
    told_of += ("dispatch_vanished", "action_failed", "action_missed")
    with write_transaction(world.engine) as conn:
        conn.execute(
            schema.events.insert(),
            [
                {"occurred_at": utcnow(), "kind": kind, "dispatch_id": "d1", "site_id": "a",
                 "details": {"action": "curtail"}}
                for kind in told_of
            ],
        )  # fmt: skip
    settings = ProcessorSettings(notify_urls=receiver.url)
    notify.run(
        world.engine,
        settings,
        utcnow(),
        health("CRITICAL", "CRITICAL: x", under=[("d1", "a", 20.0)]),
    )
    notify.run(world.engine, settings, utcnow(), health("OK"))
    kinds = [n.kind for n in notes(world.engine)]
    assert dict(zip(kinds, [t["type"] for t in receiver.told], strict=True)) == {
        "dispatch_created": "info",
        "dispatch_moved": "info",
        "dispatch_cancelled": "info",
        "dispatch_vanished": "warning",
        "action_failed": "failure",
        "action_missed": "warning",
        "under_delivered": "warning",
        "status_critical": "failure",
        "status_ok": "success",
    }


@dataclass
class Leaky(Recorder):
    """A handler whose failure names its controller's URL, password and all."""

    def __call__(self, request: ActionRequest) -> str:
        try:
            return super().__call__(request)
        except HandlerFailed as failed:
            url = f"https://ops:{SECRET}@relay.example/{request.action}"
            raise HandlerFailed(f"POST {url}: {failed}") from None


def test_a_failing_action_is_told_at_its_first_failed_attempt_once_and_again_when_it_clears(
    world: World, receiver: Receiver
) -> None:
    world.handler = Leaky(fail_first=3)  # each action fails three times, then succeeds
    bakery = site("a", name="Bakery")

    def told_of_bakery() -> list[tuple[str, str]]:
        return [(t["title"], t["type"]) for t in receiver.told if "Bakery (a)" in t["title"]]

    def acted_until(kind: str, state: str) -> None:
        def done() -> bool:
            world.process()
            turn(world, receiver.url)  # the minutely job's turn after each pass
            return {s for (k, _, _), s in world.states().items() if k == kind} == {state}

        wait_for(done, seconds=30)

    world.step(active("d1", bakery))
    turn(world, receiver.url)
    assert told_of_bakery() == [("Curtail of Bakery (a) for dispatch d1 is failing", "failure")]
    failing = receiver.told[-1]["message"]
    assert failing.startswith(
        "Attempt 1 failed: POST https://***@relay.example/curtail: site controller unreachable "
        "(call 1)\nNext attempt at "
    )
    acted_until("curtail", "succeeded")
    world.step(ended("d1", bakery))  # its restore fails too, three times
    turn(world, receiver.url)
    acted_until("restore", "succeeded")
    assert told_of_bakery() == [
        ("Curtail of Bakery (a) for dispatch d1 is failing", "failure"),  # once: not per retry
        ("Curtail of Bakery (a) for dispatch d1 succeeded at attempt 4", "success"),
        ("Restore of Bakery (a) for dispatch d1 is failing", "failure"),
        ("Restore of Bakery (a) for dispatch d1 succeeded at attempt 4", "success"),
    ]
    assert SECRET not in json.dumps(receiver.told)


def test_a_dispatch_of_200_sites_is_told_with_its_totals_and_ten_sites_named(
    world: World, receiver: Receiver
) -> None:
    many = [site(f"s{i:03}", 10.5, name=f"Site {i:03}") for i in range(200)]
    world.sandbox.dispatches = [dispatch("big", *many)]
    dispatches.fetch(world.engine, world.client)
    turn(world, receiver.url)
    (told,) = receiver.told
    assert told["title"].startswith(
        "Dispatch big (MISO - Operating Reserves): curtail 200 sites (2,100 kW), "
    )
    named = ", ".join(f"Site {i:03} (10.5 kW)" for i in range(10))
    assert told["message"] == f"200 sites (2,100 kW): {named} and 190 more"
    assert len(told["title"]) + len(told["message"]) < 500


def test_a_cancel_says_what_is_restored_and_names_the_sites_another_dispatch_keeps_curtailed(
    world: World, receiver: Receiver
) -> None:
    bakery, mill = site("a", name="Bakery"), site("b", name="Mill")
    started, holder = active("d1", bakery, mill), active("d2", bakery)
    to_come = dispatch("d3", bakery, start_time=at(60), end_time=at(120))
    world.step(started, holder, to_come)  # d1 and d2 curtail; d3 is to come
    turn(world, receiver.url)
    world.step({**started, "authorized": False}, holder, {**to_come, "authorized": False})
    turn(world, receiver.url)
    kinds = [n.kind for n in notes(world.engine)]  # a success with no failure told: nothing
    assert kinds == ["dispatch_created"] * 3 + ["dispatch_cancelled"] * 2
    cancelled = {t["title"].split()[1]: t["message"] for t in receiver.told[-2:]}
    assert sorted(cancelled) == ["d1", "d3"]
    assert cancelled["d1"].startswith("It was ")
    assert cancelled["d1"].split("\n")[1:] == [
        "Restoring 1 site: Mill (10 kW).",
        "Staying curtailed for another dispatch: Bakery (10 kW) for d2.",
    ]
    assert cancelled["d3"].startswith("It was to run ")
    assert cancelled["d3"].split("\n")[1:] == [
        "Cancelled before it started: nothing was curtailed.",
        "Staying curtailed for another dispatch: Bakery (10 kW) for d2.",
    ]


def test_a_delivery_a_service_does_not_take_is_a_warning(
    world: World, down: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    world.sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(world.engine, world.client)
    turn(world, down.url)
    (said,) = [r for r in caplog.records if r.name == "etl" and r.levelname == "WARNING"]
    assert said.getMessage().startswith(
        "notifications: 'Dispatch d1 (MISO - Operating Reserves): curtail 1 site (10 kW), "
    )
    assert "not taken, tried again later: #1 (json): " in said.getMessage()
    assert SECRET not in said.getMessage()


def test_etl_run_judges_the_status_it_tells_with_act_within(
    cli: InProcess, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    """A curtail failing at its first attempt: CRITICAL at once when no time is given to act
    (ETL_ACT_WITHIN=0s), as `etl status` would say with the same setting."""
    monkeypatch.setenv("ETL_NOTIFY_URLS", receiver.url)
    monkeypatch.setenv("ETL_ACTION_COMMAND", "false")
    sandbox.dispatches = [dispatch("d1", site("a"), start_time=at(-1))]
    assert cli("run", "--act-within", "0s").returncode == 5  # its attempt failed
    titles = [t["title"] for t in receiver.told]
    assert any(
        title.startswith("etl status is CRITICAL: the curtail of site a") for title in titles
    )


def test_a_handler_outage_across_a_dispatch_is_told_in_one_notice_and_cleared_in_one(
    world: World, receiver: Receiver
) -> None:
    """30 sites failing in one pass: one notice (ten sites named, totals, the first error), not
    30; each action still told failing once and cleared once, by a record of its own."""
    world.handler = Leaky(fail_first=1)  # an outage: every curtail's first attempt fails
    many = [site(f"s{i:02}", 10.0, name=f"Site {i:02}") for i in range(30)]
    world.step(active("d1", *many))  # one pass: the 30 curtails fail their first attempt
    turn(world, receiver.url)
    (failing,) = [t for t in receiver.told if t["type"] == "failure"]
    assert failing["title"] == "Curtails of 30 sites (300 kW) for dispatch d1 are failing"
    named = ", ".join(f"Site {i:02} (10 kW)" for i in range(10))
    lines = failing["message"].split("\n")
    assert lines[0] == f"30 sites (300 kW): {named} and 20 more"
    assert (
        lines[1].startswith("First error (Site 0") and ", attempt 1): POST https://***@" in lines[1]
    )
    assert lines[1].endswith("/curtail: site controller unreachable (call 1)")
    assert lines[-1] == "(etl audit --dispatch d1)"

    def all_curtailed() -> bool:
        world.process()  # the retries' passes, then one notifier's turn below
        return {s for (kind, _, _), s in world.states().items() if kind == "curtail"} == {
            "succeeded"
        }

    wait_for(all_curtailed, seconds=30)
    turn(world, receiver.url)
    (cleared,) = [t for t in receiver.told if t["type"] == "success"]
    assert cleared["title"] == "Curtails of 30 sites (300 kW) for dispatch d1 succeeded"
    assert cleared["message"].split("\n")[0] == f"30 sites (300 kW): {named} and 20 more"
    told = len(receiver.told)
    assert turn(world, receiver.url).planned == 0 and len(receiver.told) == told  # nothing new
    assert [t["type"] for t in receiver.told] == ["info", "failure", "success"]
    assert SECRET not in json.dumps(receiver.told)
    # each action told failing once and cleared once: a record each, under its own subject
    keys = {world.key("d1", f"s{i:02}", "curtail") for i in range(30)}
    subjects = [n.subject for n in notes(world.engine) if n.subject]
    assert sorted(subjects) == sorted(
        [f"action_failing:{key}" for key in keys] + [f"action_cleared:{key}" for key in keys]
    )
    assert all(n.sent_at is not None for n in notes(world.engine))


def test_actions_that_failed_for_good_in_one_turn_are_told_in_one_notice(
    world: World, receiver: Receiver
) -> None:
    """As failing ones are: one notice per dispatch, kind and action, each event told once."""
    many = [site(f"s{i:02}", 5.0, name=f"Site {i:02}") for i in range(12)]
    world.sandbox.dispatches = [dispatch("d1", *many)]
    dispatches.fetch(world.engine, world.client)
    with write_transaction(world.engine) as conn:
        conn.execute(
            schema.events.insert(),
            [
                {"occurred_at": utcnow(), "kind": "action_failed", "dispatch_id": "d1",
                 "site_id": f"s{i:02}", "details": {"action": "restore", "error": f"relay {i}"}}
                for i in range(12)
            ],
        )  # fmt: skip
    assert turn(world, receiver.url).planned == 2  # the dispatch created, and one notice
    told = receiver.told[-1]
    assert (told["title"], told["type"]) == (
        "Restores of 12 sites (60 kW) for dispatch d1 failed",
        "failure",
    )
    named = ", ".join(f"Site {i:02} (5 kW)" for i in range(10))
    assert told["message"].split("\n") == [
        f"12 sites (60 kW): {named} and 2 more",
        "First error (Site 00 (s00)): relay 0",
        "(etl audit --dispatch d1)",
    ]
    assert turn(world, receiver.url).planned == 0 and len(receiver.told) == 2
    assert sum(n.event_id is not None for n in notes(world.engine)) == 12 + 1  # one per event
