"""`make demo-devices`: the device edge against simulated equipment on loopback, with the
built-in emulator as Voltus (docs/modbus.md, docs/openadr.md).

1. A battery inverter, simulated by pymodbus's own server: a dispatch of site `lkjh` is
   curtailed by `etl run` with the `modbus` handler (mode, then setpoint, each read back), the
   battery's meter is read by `etl telemetry collect --source modbus:...` and sent, and the
   dispatch's end, moved to now, restores it.
2. A thermostat aggregator's VEN, OpenLEADR's own client: `etl openadr serve` runs the VTN and
   the processor; the VEN registers, takes a dispatch of site `asdf` and opts in, and reports
   its kW, which reaches the emulator; Voltus cancels the dispatch, and the VEN is told.

Each part has a SQLite store of its own in the folder given, as an operator would run each
integration. Every etl step is the real command, its output shown as it prints it.

    python -m etl.sandbox.device_demo FOLDER
"""

import asyncio
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from etl.base.timeutil import format_rfc3339, utcnow
from etl.sandbox.emulator import Sandbox

ETL = str(Path(sys.executable).parent / "etl")
PROGRAM = {
    "id": 42,
    "name": "MISO - Operating Reserves",
    "timezone": "US/Central",
    "market": "MISO",
    "program_type": "ancillary_services",
}
# the inverter of docs/modbus.md's worked example: holding 100 the mode, 101-102 the setpoint
# (int32, 0.1 kW); input 300-301 its power (int32, 0.1 kW), 302-303 its charge (uint32, 0.01 kWh)
MODBUS_MAP = """
[sites.lkjh]
host = "127.0.0.1"
port = {port}
unit = 3
curtail = [
  {{ address = 100, value = 2 }},
  {{ address = 101, type = "int32", scale = 0.1, value = 40 }},
]
restore = [
  {{ address = 101, type = "int32", scale = 0.1, value = 0 }},
  {{ address = 100, value = 1 }},
]

[meters.lkjh-bat]
site = "lkjh"
host = "127.0.0.1"
port = {port}
unit = 3
kw = {{ table = "input", address = 300, type = "int32", scale = 0.1 }}
kwh = {{ table = "input", address = 302, type = "uint32", scale = 0.01 }}
"""
OPENADR_MAP = """
vens = ["ecobee-aggregator"]

[[sites]]
site_id = "asdf"
ven = "ecobee-aggregator"
resources = ["homes-zone-east"]
meter_id = "asdf-m1"
"""
# as the emulator's GET /sites lists them, with what the demo's dispatches commit
BATTERY_SITE = {"id": "lkjh", "name": "Site 2", "customer_location_id": "2", "commitment": 40}
VEN_SITE = {"id": "asdf", "name": "Site 1", "customer_location_id": "1", "commitment": 12}
WAIT_SECONDS = 120  # for the VEN's opt-in and its first reading to reach the emulator


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with Sandbox() as sandbox:
        print(f"+ the emulator serves the Voltus API at {sandbox.url}", flush=True)
        env = {**os.environ, "VOLTUS_API_URL": sandbox.url, "VOLTUS_API_KEY": sandbox.key}
        modbus_part(folder, sandbox, env)
        openadr_part(folder, sandbox, env)


def dispatch(dispatch_id: str, site: dict[str, Any]) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": dispatch_id,
        "authorized": True,
        "test": False,
        "start_time": format_rfc3339(now - timedelta(minutes=1)),
        "end_time": format_rfc3339(now + timedelta(minutes=59)),
        "program": PROGRAM,
        "sites": [site],
    }


def etl(env: dict[str, str], *argv: str) -> None:
    print("+ etl " + " ".join(argv), flush=True)
    subprocess.run([ETL, *argv], env=env, check=True)


def modbus_part(folder: Path, sandbox: Sandbox, env: dict[str, str]) -> None:
    from pymodbus.client import ModbusTcpClient

    print("\n== 1. A battery inverter over Modbus TCP (pymodbus's simulated device) ==")
    with sandbox.lock:
        sandbox.dispatches = [dispatch("battery-now", BATTERY_SITE)]
    loop = Loop()
    server, port = loop.run(battery())
    mapping = folder / "modbus.toml"
    mapping.write_text(MODBUS_MAP.format(port=port))
    env = {
        **env,
        "ETL_DATABASE_URL": f"sqlite:///{folder.resolve()}/modbus.db",
        "ETL_HANDLER": "modbus",
        "ETL_MODBUS_MAP": str(mapping),
        "STATE_DIRECTORY": str(folder.resolve()),  # where the meter source keeps its outages
    }
    try:
        etl(env, "db", "upgrade")
        etl(env, "fetch", "--sites", "--quiet")
        etl(env, "run")
        with ModbusTcpClient("127.0.0.1", port=port, timeout=2) as client:
            held = client.read_holding_registers(100, count=3, device_id=3).registers
        print(f"+ the inverter's holding registers 100-102 now: {held} (remote mode, 40 kW)")
        etl(env, "telemetry", "collect", "--source", f"modbus:{mapping}")
        print(f"+ the emulator holds {len(sandbox.received)} readings of meter lkjh-bat")
        print("+ the dispatch's end is moved to now, in the emulator")
        with sandbox.lock:
            sandbox.dispatches[0]["end_time"] = format_rfc3339(utcnow())
        etl(env, "run")
        with ModbusTcpClient("127.0.0.1", port=port, timeout=2) as client:
            held = client.read_holding_registers(100, count=3, device_id=3).registers
        print(f"+ the inverter's holding registers 100-102 now: {held} (automatic mode, 0 kW)")
        etl(env, "audit", "--dispatch", "battery-now")
    finally:
        loop.run(server.shutdown())
        loop.close()


async def battery() -> tuple[Any, int]:
    """pymodbus's server: unit 3, holding registers 0-199, the meter's input registers."""
    from pymodbus.client import ModbusTcpClient
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    int32, uint32 = ModbusTcpClient.DATATYPE.INT32, ModbusTcpClient.DATATYPE.UINT32
    meter = [  # discharging at 38.5 kW, 61.2 kWh left
        *ModbusTcpClient.convert_to_registers(385, int32),
        *ModbusTcpClient.convert_to_registers(6120, uint32),
    ]
    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    holding = [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)]
    inputs = [SimData(300, values=meter, datatype=DataType.REGISTERS)]
    unit = SimDevice(3, simdata=(bits, list(bits), holding, inputs))
    server = ModbusTcpServer([unit], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    transport = cast(asyncio.Server, server.transport)
    return server, transport.sockets[0].getsockname()[1]


def openadr_part(folder: Path, sandbox: Sandbox, env: dict[str, str]) -> None:
    print("\n== 2. A thermostat aggregator's VEN over OpenADR 2.0b (OpenLEADR's client) ==")
    with sandbox.lock:
        sandbox.dispatches = [dispatch("vens-now", VEN_SITE)]
        sandbox.received.clear()
    mapping = folder / "openadr.toml"
    mapping.write_text(OPENADR_MAP)
    port = free_port()
    env = {**env, "ETL_DATABASE_URL": f"sqlite:///{folder.resolve()}/openadr.db"}
    etl(env, "db", "upgrade")
    etl(env, "fetch", "--sites", "--quiet")
    argv = ["openadr", "serve", "--mapping", str(mapping), "--listen", f"127.0.0.1:{port}",
            "--poll-every", "2", "--every", "5"]  # fmt: skip
    print("+ etl " + " ".join(argv) + " &", flush=True)
    serve = subprocess.Popen([ETL, *argv], env=env)
    loop = Loop()
    told: list[str] = []
    try:
        wait_for(lambda: listening(port), "the VTN to listen")
        ven = loop.run(aggregator(f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", told))
        wait_for(lambda: bool(told), "the VEN to be sent the event")
        wait_for(lambda: bool(sandbox.received), "the VEN's first reading to reach the emulator")
        print(f"+ the emulator holds {len(sandbox.received)} readings of meter asdf-m1")
        print("+ Voltus cancels the dispatch, in the emulator")
        with sandbox.lock:
            sandbox.dispatches[0]["authorized"] = False
        wait_for(lambda: "cancelled" in told[-1], "the VEN to be told of the cancellation")
        wait_for(lambda: restored(env), "the restore to be recorded")
        loop.run(ven.stop())
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=30)
        loop.close()
    etl(env, "audit", "--dispatch", "vens-now")


async def aggregator(vtn_url: str, told: list[str]) -> Any:
    """OpenLEADR's VEN for the aggregator: it opts in to each event and reports 14.2 kW."""
    import warnings

    with warnings.catch_warnings():  # signxml's import names a deprecated class: not ours
        warnings.simplefilter("ignore")
        from openleadr import OpenADRClient

    async def on_event(event: dict[str, Any]) -> str:
        descriptor = event["event_descriptor"]
        status = descriptor["event_status"]
        said = "acknowledged" if status == "cancelled" else "opting in"
        line = f"VEN: event {descriptor['event_id']} ({status}): {said}"
        print(line, flush=True)
        told.append(line)
        return "optIn"

    ven = OpenADRClient(ven_name="ecobee-aggregator", vtn_url=vtn_url, disable_signature=True)
    ven.add_handler("on_event", on_event)
    ven.add_handler("on_update_event", on_event)
    ven.add_report(
        callback=lambda: 14.2,
        resource_id="homes-zone-east",
        measurement="real_power",
        unit="W",
        scale="k",
        sampling_rate=timedelta(seconds=30),
        report_duration=timedelta(seconds=30),
    )
    await ven.run()
    return ven


class Loop:
    """An asyncio loop in a thread of its own, for the simulated device and the VEN."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def restored(env: dict[str, str]) -> bool:
    """Whether the restore of the VEN's site succeeded, by etl's own report of it."""
    argv = [ETL, "report", "curtailments", "--format", "csv"]
    found = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    rows = csv.DictReader(io.StringIO(found))
    return any(row["action"] == "restore" and row["state"] == "succeeded" for row in rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: gave up waiting {WAIT_SECONDS} s for {what}")
        time.sleep(0.2)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
