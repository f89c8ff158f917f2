"""The `modbus` meter source (an `etl.telemetry_sources` entry point): each call of `etl telemetry
collect --source modbus:/etc/etl/modbus.toml` reads every meter of the mapping file once (its kW,
and a battery's kWh) as the reading of the 30-second interval that just ended, and queues them by
meter id. A timer runs it every 30 s (docs/modbus.md). A meter that does not answer has no
reading, a gap and never a made-up value, logged once when the outage begins and once when it
ends: the meters out are remembered between calls in a small file of etl's state."""

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl.base.errors import ConfigError
from etl.base.logs import log
from etl.base.timeutil import format_rfc3339
from etl.devices.modbus_link import DeviceError, Link, Silent, Unreachable, read
from etl.devices.modbus_map import Meter, load_mapping

if TYPE_CHECKING:  # the contract's type only: the collecting command has it loaded
    from etl.ingest.sources import Queue

__all__ = ["OUTAGES_FILE", "collect", "outages_path"]

INTERVAL = 30  # seconds: the readings' interval, the API's shortest
# a timer that fires this close before a boundary reads the interval that ends there, once it
# has: not the one it was meant to follow, read again with another value
EARLY_SECONDS = 2.0
POLL_SECONDS = 20.0  # a whole poll, done well before the next one starts
REQUEST_SECONDS = 3.0  # one request: a unit that does not answer costs its host no more
MOST_CONNECTIONS = 32  # hosts polled at once
OUTAGES_FILE = "modbus-outages.json"

Values = tuple[float, float | None]  # a meter's kW, and its kWh if it is a battery's


def collect(argument: str, queue: "Queue") -> None:
    """Read every meter of the mapping file `argument` once and queue what answered."""
    mapping = load_mapping(argument, "the modbus source's mapping file")
    if not mapping.meters:
        raise ConfigError(f"{mapping.origin} maps no meter", "see docs/modbus.md")
    end = _interval_end()
    polled = _poll(mapping.meters.values())
    failed = {id: str(error) for id, error in polled.items() if isinstance(error, DeviceError)}
    _tell_outages(mapping.meters, failed, end)
    records = [
        record
        for id, values in polled.items()
        if not isinstance(values, DeviceError)
        for record in _records(mapping.meters[id], values, end)
    ]
    if records:
        queue(Path(argument).name, records)


def _interval_end() -> datetime:
    """The end of the interval to read now: the last boundary, or the next one if it is only a
    moment away (a timer that fired a little early), once reached."""
    now = time.time()
    end = int(now // INTERVAL) * INTERVAL
    if end + INTERVAL - now <= EARLY_SECONDS:
        end += INTERVAL
        time.sleep(end - now)
    return datetime.fromtimestamp(end, UTC)


def _poll(meters: Iterable[Meter]) -> dict[str, Values | DeviceError]:
    """Each meter's values or why it has none: the meters of each host and port in turn, on one
    connection (a gateway takes few), the hosts at once."""
    hosts: dict[tuple[str, int], list[Meter]] = defaultdict(list)
    for meter in meters:
        hosts[meter.device.host, meter.device.port].append(meter)
    deadline = time.monotonic() + POLL_SECONDS
    with ThreadPoolExecutor(min(len(hosts), MOST_CONNECTIONS), "etl-modbus") as pool:
        polled = pool.map(lambda host: _poll_host(host, deadline), hosts.values())
        return {id: values for host in polled for id, values in host.items()}


def _poll_host(meters: list[Meter], deadline: float) -> dict[str, Values | DeviceError]:
    """The meters of one host and port: once it cannot be reached, or a unit does not answer,
    the meters left there are not asked (each would wait as long, for nothing)."""
    polled: dict[str, Values | DeviceError] = {}
    out: dict[int | None, DeviceError] = {}  # by unit; None: the whole host
    device = meters[0].device
    with Link(device.host, device.port, deadline, REQUEST_SECONDS) as link:
        for meter in meters:
            known = out.get(None) or out.get(meter.device.unit)
            if known is not None:
                polled[meter.id] = known
                continue
            try:
                kw = read(link, meter.device, meter.kw)
                kwh = read(link, meter.device, meter.kwh) if meter.kwh else None
            except DeviceError as error:
                polled[meter.id] = error
                if isinstance(error, Unreachable | Silent):
                    out[None if isinstance(error, Unreachable) else meter.device.unit] = error
                continue
            polled[meter.id] = (kw, kwh)
    return polled


def _records(meter: Meter, values: Values, end: datetime) -> list[dict[str, Any]]:
    """The meter's readings, as `etl telemetry send` takes them: kW, and a battery's kWh."""
    kw, kwh = values
    common = {"site_id": meter.site_id, "meter_id": meter.id, "timestamp": format_rfc3339(end)}
    return [{**common, "kw": kw}, *([{**common, "kwh": kwh}] if kwh is not None else [])]


def outages_path() -> Path:
    """Where the meters out are remembered: the unit's StateDirectory= under systemd (the
    shipped units' /var/lib/etl), else `$XDG_STATE_HOME/etl` (`~/.local/state/etl`)."""
    # systemd joins the paths of several StateDirectory= with colons
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / OUTAGES_FILE
    home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(home) / "etl" / OUTAGES_FILE


def _tell_outages(meters: Iterable[str], failed: dict[str, str], now: datetime) -> None:
    """Log each meter's outage when it begins and when it ends: not at each poll between."""
    path = outages_path()
    before = _outages(path)
    after = dict(before)
    for id in meters:
        if id in failed and id not in before:
            log.warning("modbus meter %s: no reading until it answers: %s", id, failed[id])
            after[id] = format_rfc3339(now)
        elif id not in failed and id in before:
            log.info("modbus meter %s answers again: no reading from %s until now", id, before[id])
            del after[id]
    if after == before:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        spare = path.with_name(f".{path.name}.{os.getpid()}")
        spare.write_text(json.dumps(after, indent=1, sort_keys=True), encoding="utf-8")
        spare.replace(path)  # whole or not at all: a reader never finds it half written
    except OSError as error:
        log.warning(
            "cannot keep the modbus meters out in %s (%s): each poll logs them again",
            path,
            error.strerror,
        )


def _outages(path: Path) -> dict[str, str]:
    """The meters out when the last poll ended, each with when its outage began: none if the
    file is missing or unreadable (its outages are then logged once more)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {id: since for id, since in found.items() if isinstance(since, str)}
