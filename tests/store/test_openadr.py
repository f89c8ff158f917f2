"""The OpenADR VTN bridge against OpenLEADR's own VEN client on loopback, on both databases, with
the emulator as the API: registration, an event with the dispatch's times and the commitment, a
moved end, a cancel, an opt-out recorded as a failed curtail, a report sent on to the emulator,
a restart of the VTN and of a VEN, and `etl openadr serve`'s loop end to end. The VEN polls
every second; no test waits longer."""

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from openleadr import OpenADRClient
from sqlalchemy import Engine, select

from etl.act import processor, send_telemetry
from etl.base.config import ApiSettings, ProcessorSettings
from etl.base.errors import ConfigError
from etl.base.timeutil import format_rfc3339
from etl.devices import openadr_service
from etl.devices.openadr_mapping import load_mapping
from etl.devices.openadr_vtn import Vtn, VtnSettings
from etl.ingest import dispatches
from etl.jobs import runner
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import schema
from tests.helpers import dispatch, site, wait_for
from tests.processes import InProcess, free_port
from tests.store.test_cli import assert_one_line_error

T = TypeVar("T")
SETTINGS = ProcessorSettings(retry_backoff=0.2, workers=4, handler_timeout=10)
VTN = VtnSettings(port=0, poll_seconds=1, answer_seconds=3)
MAPPING = """
vens = ["thermostats", "chillers"]

[[sites]]
site_id = "s1"
ven = "thermostats"
resources = ["zone-1"]

[[sites]]
site_id = "s2"
ven = "chillers"
"""
SITES = [
    {
        "id": s,
        "name": f"Site {s}",
        "customer_location_id": f"loc-{s}",
        "meters": [{"id": f"{s}-m", "name": "Main", "asset_type": "load"}],
    }
    for s in ("s1", "s2")
]


def moment(seconds: float) -> datetime:
    """A whole second this long from now: OpenADR's durations are of whole seconds."""
    return datetime.fromtimestamp(int(time.time() + seconds), UTC)


def window(
    start: datetime, end: datetime | None, *sites: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """Dispatch d1 from `start` to `end`, of site s1 (12 kW) and these."""
    times = {"start_time": format_rfc3339(start), "end_time": end and format_rfc3339(end)}
    return dispatch("d1", site("s1", 12.0), *sites, **times, **fields)


class Ven:
    """OpenLEADR's VEN client in an asyncio loop of its own thread, answering every event (and
    each modification) with `opt`; `reading` is what its report of each of `resources` gives
    (kW)."""

    def __init__(
        self,
        name: str,
        url: str,
        opt: str = "optIn",
        reading: Callable[[], list[tuple[datetime, float]]] | None = None,
        resources: tuple[str, ...] = ("zone-1",),
        syncs: bool = True,
    ) -> None:
        self.name, self.opt = name, opt
        self.events: list[dict[str, Any]] = []  # as received: each new one and each update
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self.call(self._run(url, reading, resources, syncs))

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    async def _run(
        self,
        url: str,
        reading: Callable[[], list[tuple[datetime, float]]] | None,
        resources: tuple[str, ...],
        syncs: bool,
    ) -> OpenADRClient:
        client = OpenADRClient(ven_name=self.name, vtn_url=url, disable_signature=True)
        if not syncs:  # a VEN that learns of events from its polls only, as OpenADR allows
            client.sync_events = _no_sync
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        for resource in resources if reading is not None else ():
            client.add_report(
                callback=reading,
                resource_id=resource,
                measurement="real_power",
                unit="W",
                scale="k",
                sampling_rate=timedelta(seconds=30),
                report_duration=timedelta(seconds=30),
            )
        await client.run()
        return client

    async def _on_event(self, event: dict[str, Any]) -> str:
        self.events.append(event)
        return self.opt

    def last(self) -> dict[str, Any]:
        assert self.events, f"VEN {self.name} received no event"
        return self.events[-1]

    def stop(self) -> None:
        self.call(self.client.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


async def _no_sync() -> None:
    """In place of OpenLEADR's VEN's own request for its events when it starts."""


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "openadr.toml"
    path.write_text(MAPPING, encoding="utf-8")
    return path


@pytest.fixture
def store(engine: Engine, sandbox: Sandbox, client: VoltusClient) -> Engine:
    """The store, with the sites and their meters as GET /sites lists them (and no dispatch)."""
    sandbox.sites, sandbox.dispatches = SITES, []
    dispatches.fetch(engine, client, include_sites=True)
    return engine


@pytest.fixture
def vtn(store: Engine, mapping_file: Path) -> Iterator[Vtn]:
    bridge = Vtn(load_mapping(mapping_file), VTN)
    bridge.start(store)
    yield bridge
    bridge.stop()


@pytest.fixture
def thermostats(vtn: Vtn) -> Iterator[Ven]:
    ven = Ven("thermostats", vtn.url)
    yield ven
    ven.stop()


def step(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn, *shown: dict[str, Any]
) -> processor.PassSummary:
    """The API now shows these dispatches: fetch, tell the VENs of moved ends, and act."""
    sandbox.dispatches = list(shown)
    dispatches.fetch(engine, client)
    vtn.follow_ends(engine)
    return processor.process(engine, vtn, SETTINGS)


def action(engine: Engine, kind: str, site_id: str) -> tuple[str, str, list[tuple[str, str]]]:
    """The action's idempotency key, state and attempts (outcome, output or error)."""
    actions, attempts = schema.actions, schema.action_attempts
    with engine.connect() as conn:
        row = conn.execute(
            select(actions).where(actions.c.kind == kind, actions.c.site_id == site_id)
        ).one()
        tried = conn.execute(
            select(attempts).where(attempts.c.action_id == row.id).order_by(attempts.c.number)
        ).all()
    return row.idempotency_key, row.state, [(a.outcome, a.output or a.error) for a in tried]


def signals(event: dict[str, Any]) -> set[tuple[str, str, float]]:
    return {
        (s["signal_name"], s["signal_type"], s["intervals"][0]["signal_payload"])
        for s in event["event_signals"]
    }


def test_a_ven_registers_and_opts_in_to_the_curtail_s_event(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn, thermostats: Ven
) -> None:
    assert thermostats.client.registration_id and thermostats.client.ven_id == "thermostats"
    start, end = moment(-60), moment(1800)
    summary = step(store, sandbox, client, vtn, window(start, end, site("s2", 5.0)))
    key, state, attempts = action(store, "curtail", "s1")
    assert state == "succeeded"
    assert attempts == [
        (
            "succeeded",
            f"VEN thermostats opted in to event {key}: {format_rfc3339(start)} to "
            f"{format_rfc3339(end)}",
        )
    ]
    event = thermostats.last()
    assert event["event_descriptor"]["event_id"] == key
    assert event["event_descriptor"]["modification_number"] == 0
    assert event["active_period"] == {"dtstart": start, "duration": end - start}
    assert signals(event) == {("SIMPLE", "level", 1.0), ("LOAD_DISPATCH", "delta", -12.0)}
    (kilowatts,) = [s["powerReal"] for s in event["event_signals"] if "powerReal" in s]
    assert (kilowatts["item_units"], kilowatts["si_scale_code"]) == ("W", "k")
    assert {"ven_id": "thermostats"} in event["targets"]
    assert {"resource_id": "zone-1"} in event["targets"]
    # s2's VEN never registered: its curtail waits for it, and fails for now
    assert (summary.succeeded, summary.failed) == (1, 1)
    _, state, attempts = action(store, "curtail", "s2")
    assert state == "retrying" and "VEN chillers (not registered) did not answer" in attempts[0][1]


def test_a_moved_end_modifies_the_event_and_the_restore_at_its_end_sends_nothing(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn, thermostats: Ven
) -> None:
    start = moment(-60)
    step(store, sandbox, client, vtn, window(start, moment(1800)))
    later = moment(3600)
    step(store, sandbox, client, vtn, window(start, later))
    wait_for(lambda: thermostats.last()["event_descriptor"]["modification_number"] == 1)
    assert thermostats.last()["active_period"]["duration"] == later - start
    sooner = moment(2)  # an earlier end, still to come
    step(store, sandbox, client, vtn, window(start, sooner))
    wait_for(lambda: thermostats.last()["event_descriptor"]["modification_number"] == 2)
    assert thermostats.last()["active_period"]["duration"] == sooner - start
    received = len(thermostats.events)
    time.sleep(max(0.0, (sooner - datetime.now(UTC)).total_seconds()) + 0.1)
    step(store, sandbox, client, vtn, window(start, sooner))
    _, state, attempts = action(store, "restore", "s1")
    ended = f"event {_curtail_key(store)} ended at its end"
    assert (state, attempts) == ("succeeded", [("succeeded", ended)])
    time.sleep(1.5)  # a poll more: nothing was queued for the VEN
    assert len(thermostats.events) == received


def _curtail_key(engine: Engine) -> str:
    return action(engine, "curtail", "s1")[0]


def test_a_cancelled_dispatch_cancels_the_open_ended_event(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn, thermostats: Ven
) -> None:
    start = moment(-60)
    step(store, sandbox, client, vtn, window(start, None))
    key = _curtail_key(store)
    assert thermostats.last()["active_period"]["duration"] == timedelta(0)  # until cancelled
    step(store, sandbox, client, vtn, window(start, None, authorized=False))
    _, state, attempts = action(store, "restore", "s1")
    assert (state, attempts) == (
        "succeeded",
        [("succeeded", f"VEN thermostats took the cancellation of {key}")],
    )
    assert thermostats.last()["event_descriptor"]["event_status"] == "cancelled"
    assert thermostats.last()["event_descriptor"]["event_id"] == key


def test_an_opt_out_is_a_failed_curtail_and_a_retry_asks_again(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn
) -> None:
    chillers = Ven("chillers", vtn.url, opt="optOut")
    try:
        start, end = moment(-60), moment(1800)
        summary = step(store, sandbox, client, vtn, dispatch(
            "d2", site("s2", 5.0), start_time=format_rfc3339(start),
            end_time=format_rfc3339(end),
        ))  # fmt: skip
        key, state, attempts = action(store, "curtail", "s2")
        assert (summary.succeeded, summary.failed, state) == (0, 1, "retrying")
        assert attempts == [
            (
                "failed",
                f"VEN chillers opted out of event {key}: {format_rfc3339(start)} to "
                f"{format_rfc3339(end)}",
            )
        ]
        assert signals(chillers.last()) == {
            ("SIMPLE", "level", 1.0),
            ("LOAD_DISPATCH", "delta", -5.0),
        }
        assert chillers.last()["targets"] == [{"ven_id": "chillers"}]  # the whole VEN
        chillers.opt = "optIn"  # its operator saw to it
        time.sleep(SETTINGS.retry_backoff)
        processor.process(store, vtn, SETTINGS)
        _, state, attempts = action(store, "curtail", "s2")
        assert state == "succeeded" and attempts[1][0] == "succeeded"
        assert chillers.last()["event_descriptor"]["modification_number"] == 1
    finally:
        chillers.stop()


def test_a_ven_s_report_reaches_the_emulator(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn
) -> None:
    closed = moment(-120).replace(second=0)  # the end of a 30-second interval, past
    ven = Ven("thermostats", vtn.url, reading=lambda: [(closed, 2.5)])
    try:
        (requested,) = ven.client.report_requests
        ven.call(ven.client.update_report(requested["report_request_id"]))
        outbox = schema.telemetry_outbox

        def queued() -> bool:
            with store.connect() as conn:
                return conn.execute(select(outbox)).first() is not None

        wait_for(queued, 5)
    finally:
        ven.stop()
    assert send_telemetry.drain(store, client).sent == 1
    assert sandbox.received == {("telemetry", "s1-m", format_rfc3339(closed), 30, "kW"): 2.5}


def test_after_a_vtn_restart_the_restore_cancels_the_event_sent_before(
    store: Engine, sandbox: Sandbox, client: VoltusClient, mapping_file: Path
) -> None:
    """The event lived in the process before: the restore cancels it all the same (its id from
    the store), and succeeds only once the VEN answered."""
    settings = replace(VTN, port=free_port())
    start = moment(-60)
    before = Vtn(load_mapping(mapping_file), settings)
    before.start(store)
    ven = Ven("thermostats", before.url)
    try:
        step(store, sandbox, client, before, window(start, None))  # open-ended
        before.stop()
        after = Vtn(load_mapping(mapping_file), settings)
        after.start(store)
        try:
            step(store, sandbox, client, after, window(start, None, authorized=False))
        finally:
            after.stop()
    finally:
        ven.stop()
    key = _curtail_key(store)
    _, state, attempts = action(store, "restore", "s1")
    assert (state, attempts) == (
        "succeeded",
        [("succeeded", f"VEN thermostats took the cancellation of {key}")],
    )
    cancelled = ven.last()["event_descriptor"]
    assert (cancelled["event_id"], cancelled["event_status"]) == (key, "cancelled")
    assert cancelled["modification_number"] > time.time() - 60  # above any sent before


def test_a_ven_registering_again_is_sent_its_live_events(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn
) -> None:
    ven = Ven("thermostats", vtn.url)
    try:
        step(store, sandbox, client, vtn, window(moment(-60), moment(1800)))
    finally:
        ven.stop()
    key = _curtail_key(store)
    again = Ven("thermostats", vtn.url, syncs=False)  # restarted, it knows of no event
    try:
        wait_for(lambda: [e["event_descriptor"]["event_id"] for e in again.events] == [key], 5)
    finally:
        again.stop()


def test_an_end_moved_earlier_that_the_ven_never_fetched_is_no_end(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn
) -> None:
    """The VEN holds the end it fetched: the restore cancels the event, and fails while the VEN
    does not answer."""
    start = moment(-60)
    ven = Ven("thermostats", vtn.url)
    try:
        step(store, sandbox, client, vtn, window(start, moment(1800)))
    finally:
        ven.stop()  # it polls no more: the moved end stays queued
    sooner = moment(2)
    step(store, sandbox, client, vtn, window(start, sooner))
    time.sleep(max(0.0, (sooner - datetime.now(UTC)).total_seconds()) + 0.1)
    step(store, sandbox, client, vtn, window(start, sooner))
    _, state, attempts = action(store, "restore", "s1")
    assert state == "retrying"
    assert attempts == [
        (
            "failed",
            f"VEN thermostats (registered) did not answer the cancellation of event "
            f"{_curtail_key(store)} within {VTN.answer_seconds:g} s",
        )
    ]


def test_an_opt_out_of_a_moved_end_or_no_answer_is_a_warning(
    store: Engine,
    sandbox: Sandbox,
    client: VoltusClient,
    vtn: Vtn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start = moment(-60)
    ven = Ven("thermostats", vtn.url)

    def warned(text: str) -> bool:
        return any(r.levelname == "WARNING" and text in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="etl"):
        try:
            step(store, sandbox, client, vtn, window(start, moment(1800)))
            key = _curtail_key(store)
            ven.opt = "optOut"
            later = moment(3600)
            step(store, sandbox, client, vtn, window(start, later))
            wait_for(lambda: warned(
                f"VEN thermostats opted out of event {key}'s new end {format_rfc3339(later)} "
                "(site s1)"
            ))  # fmt: skip
        finally:
            ven.stop()
        latest = moment(5400)
        step(store, sandbox, client, vtn, window(start, latest))
        wait_for(lambda: warned(
            f"VEN thermostats did not answer event {key}'s new end {format_rfc3339(latest)} "
            "(site s1) in time"
        ), VTN.answer_seconds + 2)  # fmt: skip


def test_a_site_metered_by_several_resources_sends_no_reading(
    store: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """5 kW and 7 kW are neither 5 nor 7: none is sent, and the log says why."""
    path = tmp_path / "two.toml"
    path.write_text(MAPPING.replace('["zone-1"]', '["zone-1", "zone-2"]'), encoding="utf-8")
    bridge = Vtn(load_mapping(path), VTN)
    bridge.start(store)
    closed = moment(-120).replace(second=0)
    with caplog.at_level(logging.WARNING, logger="etl"):
        ven = Ven(
            "thermostats",
            bridge.url,
            reading=lambda: [(closed, 5.0)],
            resources=("zone-1", "zone-2"),
        )
        try:
            assert ven.client.report_requests
            for requested in ven.client.report_requests:
                ven.call(ven.client.update_report(requested["report_request_id"]))
            time.sleep(1)  # the readings' queueing, had they been queued
        finally:
            ven.stop()
            bridge.stop()
    with store.connect() as conn:
        assert conn.execute(select(schema.telemetry_outbox)).first() is None
    assert any("several resources of site s1" in r.getMessage() for r in caplog.records)


def test_a_site_not_mapped_fails_and_a_stranger_cannot_register(
    store: Engine, sandbox: Sandbox, client: VoltusClient, vtn: Vtn
) -> None:
    stranger = Ven("stranger", vtn.url)
    try:
        assert stranger.client.registration_id is None
    finally:
        stranger.stop()
    step(store, sandbox, client, vtn, dispatch("d3", site("s9"), start_time=format_rfc3339(
        moment(-60)), end_time=format_rfc3339(moment(600))))  # fmt: skip
    _, state, attempts = action(store, "curtail", "s9")
    assert (state, attempts) == ("retrying", [("failed", "site s9 is not in the OpenADR mapping")])


def test_serve_acts_through_the_vtn_until_stopped(
    store: Engine,
    sandbox: Sandbox,
    mapping_file: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`etl openadr serve`'s loop: the `openadr` handler loaded by name, the VTN listening, the
    loop's fetches and passes, and its stop."""
    stop = threading.Event()
    monkeypatch.setattr(runner, "stop_on_signals", lambda: stop)
    port = free_port()
    sandbox.dispatches = [window(moment(-60), moment(1800))]
    reported: list[runner.RunEvent] = []
    seen: list[Ven] = []

    def curtailed() -> bool:
        actions = schema.actions
        with store.connect() as conn:
            state = conn.execute(select(actions.c.state).where(actions.c.kind == "curtail"))
            return state.scalar() == "succeeded"

    def ven_then_stop() -> None:
        try:
            wait_for(lambda: any(isinstance(e, dispatches.FetchSummary) for e in reported))
            seen.append(Ven("thermostats", f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"))
            wait_for(curtailed)
        finally:  # whatever happened: the test's assertions say what
            stop.set()

    helper = threading.Thread(target=ven_then_stop)
    helper.start()
    openadr_service.serve(
        mapping_file,
        VtnSettings(port=port, poll_seconds=1),
        SETTINGS,
        database_url,
        ApiSettings(url=sandbox.url, key=sandbox.key),
        1.0,
        timedelta(days=1),
        reported.append,
    )
    helper.join()
    for ven in seen:
        ven.stop()
    key, state, attempts = action(store, "curtail", "s1")
    assert state == "succeeded" and attempts[-1][1].startswith("VEN thermostats opted in")
    assert seen and seen[0].last()["event_descriptor"]["event_id"] == key


def test_the_vtn_serves_on_loopback_only_and_says_when_its_port_is_taken(
    store: Engine, mapping_file: Path
) -> None:
    mapping = load_mapping(mapping_file)
    with pytest.raises(ConfigError, match=r"^refusing to serve OpenADR on 0\.0\.0\.0: plain"):
        Vtn(mapping, replace(VTN, host="0.0.0.0"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        vtn = Vtn(mapping, replace(VTN, port=port))
        with pytest.raises(ConfigError, match=f"^cannot serve OpenADR on 127.0.0.1:{port}: "):
            vtn.start(store)


def test_the_openadr_handler_outside_its_serve_is_a_one_line_error(cli: InProcess) -> None:
    result = cli("run", "--handler", "openadr")
    assert_one_line_error(result, 2, "the openadr handler runs inside `etl openadr serve` only")


def test_serve_without_its_mapping_file_is_a_one_line_error(cli: InProcess, tmp_path: Path) -> None:
    result = cli("openadr", "serve", "--mapping", str(tmp_path / "none.toml"))
    assert_one_line_error(result, 2, "none.toml: No such file or directory")
