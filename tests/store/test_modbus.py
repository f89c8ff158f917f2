"""The Modbus handler and meter source against pymodbus's own server on loopback (units 1 and 2
of one host, as behind a gateway), on both databases: curtails and restores written and read
back, a device that clamps a value, an exception response, a device down and back, meters
polled into the outbox and sent to the emulator."""

import asyncio
import dataclasses
import fcntl
import json
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sqlalchemy import Engine, Row, select

from etl.act import processor, send_telemetry
from etl.act.builtin_handlers import load_handler
from etl.base.config import SANDBOX_URL, ProcessorSettings
from etl.base.errors import ConfigError
from etl.base.timeutil import parse_rfc3339
from etl.devices import modbus_meters
from etl.devices.modbus_link import Unreachable
from etl.devices.modbus_map import DataType as MapType
from etl.devices.modbus_map import Device, Meter, Point, Table
from etl.devices.modbus_meters import outages_path
from etl.handlers import ActionKind, Handler, HandlerFailed
from etl.ingest import dispatches, sources
from etl.ingest.readings import QueueSummary
from etl.sandbox.emulator import Sandbox
from etl.source.api import VoltusClient
from etl.store import schema
from tests.helpers import REQUEST, dispatch, site
from tests.processes import InProcess
from tests.store.test_cli import assert_one_line_error
from tests.store.test_outbox import store  # noqa: F401 (a fixture)

T = TypeVar("T")
CAP = 1000  # unit 2 keeps holding register 30 at most this: an inverter rated lower than asked
INT32 = ModbusTcpClient.DATATYPE.INT32
UINT32 = ModbusTcpClient.DATATYPE.UINT32
# each unit's meter, in input registers 0-3: kW (int32, 0.01 kW steps), then kWh (uint32, 0.01)
METERS = {
    1: ModbusTcpClient.convert_to_registers(1234, INT32),  # 12.34 kW
    2: [
        *ModbusTcpClient.convert_to_registers(-2000, INT32),  # -20 kW: the battery charging
        *ModbusTcpClient.convert_to_registers(8000, UINT32),  # 80 kWh
    ],
}


async def clamp(
    function_code: int,
    start: int,
    address: int,
    count: int,
    registers: list[int],
    values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """Unit 2's hook on each request: what is written to holding register 30 is kept at CAP."""
    if values is not None and function_code in (6, 16) and address <= 30 < address + count:
        written = cast(list[int], values)  # registers: functions 6 and 16 write those
        written[30 - address] = min(written[30 - address], CAP)
    return None


def unit(unit_id: int, meter: list[int]) -> SimDevice:
    """Coils 0-15, holding registers 0-99 (100 and on: an illegal address), the meter's input
    registers."""
    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    holding = [SimData(0, count=100, values=0, datatype=DataType.REGISTERS)]
    meter_registers = [SimData(0, values=meter, datatype=DataType.REGISTERS)]
    blocks = (bits, list(bits), holding, meter_registers)
    return SimDevice(unit_id, simdata=blocks, action=clamp if unit_id == 2 else None)


class Devices:
    """pymodbus's server on a loopback port, run by an event loop in a thread of its own: stopped
    and started again on the same port, it is a device down and back (its registers reset)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self.server: ModbusTcpServer | None = None
        self.start()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=5)

    def start(self) -> None:
        async def serve() -> ModbusTcpServer:
            units = [unit(1, METERS[1]), unit(2, METERS[2])]
            server = ModbusTcpServer(units, address=("127.0.0.1", self.port))
            await server.serve_forever(background=True)
            return server

        self.server = self._run(serve())
        self.port = cast(asyncio.Server, self.server.transport).sockets[0].getsockname()[1]

    def stop(self) -> None:
        assert self.server is not None
        self._run(self.server.shutdown())
        self.server = None

    def close(self) -> None:
        if self.server is not None:
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    def holding(self, unit_id: int, address: int, count: int = 1) -> list[int]:
        """The registers as another client reads them."""
        with ModbusTcpClient("127.0.0.1", port=self.port, timeout=2) as client:
            return list(
                client.read_holding_registers(address, count=count, device_id=unit_id).registers
            )

    def coil(self, unit_id: int, address: int) -> bool:
        with ModbusTcpClient("127.0.0.1", port=self.port, timeout=2) as client:
            return bool(client.read_coils(address, device_id=unit_id).bits[0])


@pytest.fixture
def devices() -> Iterator[Devices]:
    served = Devices()
    yield served
    served.close()


@pytest.fixture(autouse=True)
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The meter source's outages file in the test's folder, as under systemd."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    return tmp_path


def mapping(port: int) -> str:
    """Site a (unit 1): a mode, an int32 setpoint in 0.1 kW steps and an enable coil; b (unit
    2): a float32 setpoint, low word first; c (unit 2): a setpoint over what the device takes;
    d (unit 1): a mode, then a register the device does not have. The meters of the store
    fixture's sites: one's on unit 1, two's battery on unit 2."""
    device = f'host = "127.0.0.1"\nport = {port}'
    return f"""
[sites.a]
{device}
unit = 1
curtail = [
  {{ address = 10, value = 2 }},
  {{ address = 11, type = "int32", value = -50, scale = 0.1 }},
  {{ table = "coil", address = 3, value = true }},
]
restore = [
  {{ address = 10, value = 0 }},
  {{ address = 11, type = "int32", value = 0, scale = 0.1 }},
  {{ table = "coil", address = 3, value = false }},
]

[sites.b]
{device}
unit = 2
curtail = [{{ address = 20, type = "float32", word_order = "little", value = 7.5 }}]
restore = [{{ address = 20, type = "float32", word_order = "little", value = 0.0 }}]

[sites.c]
{device}
unit = 2
curtail = [{{ address = 30, value = 1500 }}]
restore = [{{ address = 30, value = 0 }}]

[sites.d]
{device}
unit = 1
curtail = [{{ address = 10, value = 2 }}, {{ address = 150, value = 1 }}]
restore = [{{ address = 10, value = 0 }}]

[meters.one-m]
site = "one"
{device}
unit = 1
kw = {{ table = "input", address = 0, type = "int32", scale = 0.01 }}

[meters.two-bat]
site = "two"
{device}
unit = 2
kw = {{ table = "input", address = 0, type = "int32", scale = 0.01 }}
kwh = {{ table = "input", address = 2, type = "uint32", scale = 0.01 }}
"""


@pytest.fixture
def map_file(tmp_path: Path, devices: Devices, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "modbus.toml"
    path.write_text(mapping(devices.port))
    monkeypatch.setenv("ETL_MODBUS_MAP", str(path))
    return path


SETTINGS = ProcessorSettings(handler="modbus", handler_timeout=2, retry_backoff=0.2)


def modbus_handler(settings: ProcessorSettings = SETTINGS) -> Handler:
    return load_handler(settings, SANDBOX_URL)


def attempts(engine: Engine) -> list[Row[Any]]:
    with engine.connect() as conn:
        query = select(schema.action_attempts).order_by(schema.action_attempts.c.id)
        return list(conn.execute(query).all())


def test_two_sites_on_two_units_are_curtailed_then_restored_each_write_read_back(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, devices: Devices, map_file: Path
) -> None:
    handler = modbus_handler()
    shown = dispatch("d1", site("a"), site("b"))
    sandbox.dispatches = [shown]
    dispatches.fetch(engine, client)
    assert processor.process(engine, handler, SETTINGS).succeeded == 2
    assert devices.holding(1, 10, 3) == [2, *ModbusTcpClient.convert_to_registers(-500, INT32)]
    assert devices.coil(1, 3) is True
    float32 = ModbusTcpClient.DATATYPE.FLOAT32
    assert devices.holding(2, 20, 2) == ModbusTcpClient.convert_to_registers(7.5, float32, "little")
    outputs = sorted(attempt.output for attempt in attempts(engine))
    assert outputs[0] == (
        "curtail of site a at 127.0.0.1:"
        f"{devices.port} unit 1: holding register 10 = 2, holding registers 11-12 = -50, "
        "coil 3 = on; read back"
    )
    sandbox.dispatches = [{**shown, "authorized": False}]  # cancelled: both restored
    dispatches.fetch(engine, client)
    assert processor.process(engine, handler, SETTINGS).succeeded == 2
    assert devices.holding(1, 10, 3) == [0, 0, 0] and devices.coil(1, 3) is False
    assert devices.holding(2, 20, 2) == [0, 0]


@pytest.fixture
def handler(map_file: Path) -> Handler:
    return modbus_handler()


def test_a_device_that_clamps_a_value_fails_the_attempt_naming_the_register_and_values(
    handler: Handler, devices: Devices
) -> None:
    with pytest.raises(HandlerFailed) as failed:
        handler(dataclasses.replace(REQUEST, site_id="c"))
    assert str(failed.value) == (
        f"curtail of site c: 127.0.0.1:{devices.port} unit 2: holding register 30: wrote 1500 "
        "(registers [1500]), read back 1000 (registers [1000])"
    )
    assert devices.holding(2, 30) == [CAP]
    handler(dataclasses.replace(REQUEST, site_id="c", action=ActionKind.RESTORE))  # takes 0
    assert devices.holding(2, 30) == [0]


def test_an_exception_response_fails_the_attempt_and_says_what_was_written_before(
    handler: Handler, devices: Devices
) -> None:
    with pytest.raises(HandlerFailed) as failed:
        handler(dataclasses.replace(REQUEST, site_id="d"))
    assert str(failed.value) == (
        f"curtail of site d: 127.0.0.1:{devices.port} unit 1: holding register 150: refused "
        "with exception 2 (illegal data address) (written before it, and read back: holding "
        "register 10 = 2)"
    )


def test_a_site_not_in_the_mapping_fails_naming_the_site_and_the_file(
    handler: Handler, map_file: Path
) -> None:
    with pytest.raises(HandlerFailed, match=f"site 'zz' is not in ETL_MODBUS_MAP '{map_file}'"):
        handler(dataclasses.replace(REQUEST, site_id="zz"))


def test_a_device_down_fails_the_attempt_and_etls_retry_succeeds_once_it_is_back(
    engine: Engine, sandbox: Sandbox, client: VoltusClient, devices: Devices, map_file: Path
) -> None:
    handler = modbus_handler()
    sandbox.dispatches = [dispatch("d1", site("a"))]
    dispatches.fetch(engine, client)
    devices.stop()
    assert processor.process(engine, handler, SETTINGS).failed == 1
    devices.start()  # on the same port, its registers reset: as a device restarted
    time.sleep(SETTINGS.retry_backoff)
    assert processor.process(engine, handler, SETTINGS).succeeded == 1
    first, second = attempts(engine)
    assert first.outcome == "failed" and second.outcome == "succeeded"
    assert first.error == (
        f"curtail of site a: 127.0.0.1:{devices.port}: no connection (refused, unreachable, or "
        "closed by the device)"
    )
    assert devices.holding(1, 10) == [2] and devices.coil(1, 3) is True


def test_a_device_that_never_answers_fails_within_the_handler_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes connections, answers nothing
        path = tmp_path / "silent.toml"
        path.write_text(mapping(silent.getsockname()[1]))
        monkeypatch.setenv("ETL_MODBUS_MAP", str(path))
        handler = modbus_handler(dataclasses.replace(SETTINGS, handler_timeout=0.3))
        started = time.monotonic()
        with pytest.raises(HandlerFailed, match=r"curtail of site a: .* unit 1: no answer within"):
            handler(dataclasses.replace(REQUEST, site_id="a"))
        assert time.monotonic() - started < 2


def test_a_bad_mapping_stops_the_handler_before_any_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ETL_MODBUS_MAP", raising=False)
    with pytest.raises(ConfigError, match="ETL_MODBUS_MAP is not set"):
        modbus_handler()
    path = tmp_path / "bad.toml"
    path.write_text('[sites.a]\nhost = "h"\nport = 70000\nunit = 1\ncurtail = []\nrestore = []\n')
    monkeypatch.setenv("ETL_MODBUS_MAP", str(path))
    with pytest.raises(ConfigError, match=r"sites\.a\.port: 70000 is out of range"):
        modbus_handler()
    path.write_text('[meters.m]\nsite = "s"\nhost = "h"\nunit = 1\nkw = { address = 0 }\n')
    with pytest.raises(ConfigError, match="maps no site"):
        modbus_handler()


def meter_readings(engine: Engine) -> dict[tuple[str, str], float]:
    with engine.connect() as conn:
        rows = conn.execute(select(schema.telemetry_outbox)).all()
    return {(row.meter_id, row.units): row.value for row in rows}


def test_meters_are_polled_into_the_outbox_by_meter_id_and_sent_to_the_emulator(
    store: Engine,  # noqa: F811
    sandbox: Sandbox,
    client: VoltusClient,
    map_file: Path,
) -> None:
    before = int(time.time())
    collected = sources.collect(store, f"modbus:{map_file}")
    assert [(name, s.lines, s.queued, s.rejected) for name, s in collected.batches] == [
        ("modbus.toml", 3, 3, 0)
    ]
    assert meter_readings(store) == {
        ("one-m", "kW"): 12.34,
        ("two-bat", "kW"): -20.0,
        ("two-bat", "kWh"): 80.0,
    }
    assert send_telemetry.drain(store, client).sent == 3
    (timestamp,) = {key[2] for key in sandbox.received}
    end = parse_rfc3339(timestamp).timestamp()
    assert end % 30 == 0 and before - 30 < end <= time.time()  # the interval that just ended
    assert sandbox.received == {
        ("telemetry", "one-m", timestamp, 30, "kW"): 12.34,
        ("telemetry", "two-bat", timestamp, 30, "kW"): -20.0,
        ("telemetry", "two-bat", timestamp, 30, "kWh"): 80.0,
    }


def test_a_meter_down_leaves_a_gap_logged_once_when_it_begins_and_once_when_it_ends(
    store: Engine,  # noqa: F811
    devices: Devices,
    map_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    devices.stop()
    with caplog.at_level(logging.INFO, logger="etl"):
        assert sources.collect(store, f"modbus:{map_file}").batches == []  # nothing made up
        sources.collect(store, f"modbus:{map_file}")  # still down: not logged again
        devices.start()
        back = sources.collect(store, f"modbus:{map_file}")
    assert [s.queued for _, s in back.batches] == [3]
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "modbus meter" in r.message]
    down = f"127.0.0.1:{devices.port}: no connection"
    assert [(level, message.split(": no reading")[0]) for level, message in said] == [
        ("WARNING", "modbus meter one-m"),
        ("WARNING", "modbus meter two-bat"),
        ("INFO", "modbus meter one-m answers again"),
        ("INFO", "modbus meter two-bat answers again"),
    ]
    assert down in said[0][1]
    assert outages_path(str(map_file)).read_text() == "{}"


@pytest.fixture
def down_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def meters_file(path: Path, port: int, ids: list[str]) -> str:
    """A mapping of these meters, each a unit of the host on `port`."""
    entry = 'site = "s"\nhost = "127.0.0.1"\nport = {}\nunit = {}\nkw = {{ address = 0 }}\n'
    path.write_text(
        "".join(f"[meters.{id}]\n{entry.format(port, n)}" for n, id in enumerate(ids, 1))
    )
    return str(path)


def queue_nothing(name: str, records: Iterable[str | dict[str, Any]]) -> QueueSummary:
    raise AssertionError("a meter down has no reading to queue")


def test_a_host_that_fails_to_connect_unexpectedly_costs_the_poll_only_its_own_meters(
    devices: Devices,
) -> None:
    kw = Point(Table.INPUT, 0, MapType.INT32, Decimal("0.01"))
    lost = Meter("lost", "s", Device("a..b", 502, 1), kw, None)  # its name cannot be encoded
    found = Meter("found", "s", Device("127.0.0.1", devices.port, 1), kw, None)
    polled = modbus_meters._poll([lost, found])
    assert isinstance(polled["lost"], Unreachable)
    assert (
        str(polled["lost"]) == "a..b:502: no connection: UnicodeError: encoding with 'idna' "
        "codec failed (UnicodeError: label empty or too long)"
    )
    assert polled["found"] == (12.34, None)


def test_the_outages_are_kept_per_mapping_file_under_a_lock_and_forget_unmapped_meters(
    tmp_path: Path, down_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    first = meters_file(tmp_path / "first.toml", down_port, ["m1", "m2"])
    second = meters_file(tmp_path / "second.toml", down_port, ["m1"])
    assert outages_path(first) != outages_path(second)
    modbus_meters.collect(first, queue_nothing)
    assert json.loads(outages_path(first).read_text()).keys() == {"m1", "m2"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="etl"):
        modbus_meters.collect(second, queue_nothing)  # its own file: m1's outage is news there
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["modbus meter m1"]
    meters_file(tmp_path / "first.toml", down_port, ["m1"])  # m2 taken out of the mapping
    with outages_path(first).open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another poll of the file, part way through
        polling = threading.Thread(target=modbus_meters.collect, args=(first, queue_nothing))
        polling.start()
        polling.join(timeout=0.5)
        assert polling.is_alive()  # waits its turn
    polling.join(timeout=5)
    assert json.loads(outages_path(first).read_text()).keys() == {"m1"}


def test_meters_the_poll_had_no_time_for_are_not_an_outage_of_theirs(
    tmp_path: Path,
    down_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = meters_file(tmp_path / "meters.toml", down_port, ["m1", "m2"])
    modbus_meters.collect(path, queue_nothing)
    kept = outages_path(path).read_text()
    caplog.clear()
    monkeypatch.setattr(modbus_meters, "POLL_SECONDS", 0.0)  # as hosts past the 32 polled at once
    meters_file(tmp_path / "meters.toml", down_port, ["m1", "m3"])
    with caplog.at_level(logging.INFO, logger="etl"):
        modbus_meters.collect(path, queue_nothing)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            "modbus poll of meters.toml ran out of its 0 s before it could read meters m1, m3: "
            "no reading of them this interval (etl's time, not theirs: too many hosts, or slow "
            "ones)",
        )
    ]
    assert json.loads(outages_path(path).read_text()) == {"m1": json.loads(kept)["m1"]}


def test_etl_telemetry_collect_with_the_modbus_source_reads_queues_and_sends(
    cli: InProcess, sandbox: Sandbox, tmp_path: Path, devices: Devices
) -> None:
    cli.ok("fetch", "--sites")
    path = tmp_path / "meters.toml"
    path.write_text(
        f'[meters.asdf-m1]\nsite = "asdf"\nhost = "127.0.0.1"\nport = {devices.port}\nunit = 1\n'
        'kw = { table = "input", address = 0, type = "int32", scale = 0.01 }\n'
    )
    result = cli("telemetry", "collect", "--source", f"modbus:{path}")
    assert result.returncode == 0, result.stderr
    assert "telemetry sent: 1 readings in 1 requests" in result.stderr
    assert [value for key, value in sandbox.received.items() if key[1] == "asdf-m1"] == [12.34]
    path.write_text(path.read_text().replace("unit = 1", "unit = 300"))
    assert_one_line_error(
        cli("telemetry", "collect", "--source", f"modbus:{path}"),
        2,
        "meters.asdf-m1.unit: 300 is out of range (1 to 247)",
    )


def test_etl_process_with_a_bad_mapping_is_one_line_exit_2(
    cli: InProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.toml"
    curtail = "curtail = [{ address = 1, value = nan }]\nrestore = [{ address = 1, value = 0 }]"
    path.write_text(f'[sites.a]\nhost = "h"\nunit = 1\n{curtail}\n')
    monkeypatch.setenv("ETL_MODBUS_MAP", str(path))
    result = cli("process", "--handler", "modbus")
    assert_one_line_error(result, 2, "sites.a.curtail[0].value: is not finite")
