"""The `modbus` meter source (an `etl.telemetry_sources` entry point): each call of `etl telemetry
collect --source modbus:/etc/etl/modbus.toml` reads every meter of the mapping file once (its kW,
and a battery's kWh) as the reading of the 30-second interval that just ended, and queues them by
meter id. A timer runs it every 30 s (docs/modbus.md). A meter that does not answer has no
reading, a gap and never a made-up value, logged once when the outage begins and once when it
ends: the meters out are remembered between calls in a small file of etl's state, one per
mapping file."""

import fcntl
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from etl.base.errors import ConfigError
from etl.base.logs import log
from etl.base.timeutil import format_rfc3339
from etl.devices.modbus_link import DeviceError, Link, OutOfTime, Silent, Unreachable, read
from etl.devices.modbus_map import Meter, load_mapping

if TYPE_CHECKING:  # the contract's type only: the collecting command has it loaded
    from etl.ingest.sources import Queue

__all__ = ["collect", "outages_path"]

INTERVAL = 30  # seconds: the readings' interval, the API's shortest
# a timer that fires this close before a boundary reads the interval that ends there, once it
# has: not the one it was meant to follow, read again with another value
EARLY_SECONDS = 2.0
POLL_SECONDS = 20.0  # a whole poll, done well before the next one starts
REQUEST_SECONDS = 3.0  # one request: a unit that does not answer costs its host no more
MOST_CONNECTIONS = 32  # hosts polled at once

Values = tuple[float, float | None]  # a meter's kW, and its kWh if it is a battery's


def collect(argument: str, queue: "Queue") -> None:
    """Read every meter of the mapping file `argument` once and queue what answered."""
    mapping = load_mapping(argument, "the modbus source's mapping file")
    if not mapping.meters:
        raise ConfigError(f"{mapping.origin} maps no meter", "see docs/modbus.md")
    end = _interval_end()
    polled = _poll(mapping.meters.values())
    late = [id for id, error in polled.items() if isinstance(error, OutOfTime)]
    if late:
        log.warning(
            "modbus poll of %s ran out of its %g s before it could read meters %s: no reading "
            "of them this interval (etl's time, not theirs: too many hosts, or slow ones)",
            Path(argument).name,
            POLL_SECONDS,
            ", ".join(late[:20]) + (f" and {len(late) - 20} more" if len(late) > 20 else ""),
        )
    failed = {id: str(error) for id, error in polled.items() if isinstance(error, DeviceError)}
    _tell_outages(outages_path(argument), mapping.meters, failed, set(late), end)
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


def outages_path(mapping: str) -> Path:
    """Where the meters out of the mapping file `mapping` are remembered: a file of its own
    (named by its absolute path's hash), in the unit's StateDirectory= under systemd (the
    shipped units' /var/lib/etl), else in `$XDG_STATE_HOME/etl` (`~/.local/state/etl`)."""
    key = hashlib.sha256(os.path.abspath(mapping).encode()).hexdigest()[:16]
    name = f"modbus-outages-{key}.json"
    # systemd joins the paths of several StateDirectory= with colons
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / name
    home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(home) / "etl" / name


def _tell_outages(
    path: Path, meters: Iterable[str], failed: dict[str, str], late: set[str], now: datetime
) -> None:
    """Log each meter's outage when it begins and when it ends, not at each poll between: the
    meters out are kept in `path`, locked while read and rewritten (two polls of one mapping
    file at once would each log what the other did)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("a+", encoding="utf-8")
    except OSError as error:
        _cannot_keep(path, error)
        _changes({}, meters, failed, late, now)
        return
    with file:
        fcntl.flock(file, fcntl.LOCK_EX)  # let go when the file is closed
        before = _outages(file)
        after = _changes(before, meters, failed, late, now)
        if after == before:
            return
        try:
            # in place: a write cut short is a file unreadable, whose outages are told again
            file.truncate(0)
            file.write(json.dumps(after, indent=1, sort_keys=True))
            file.flush()
        except OSError as error:
            _cannot_keep(path, error)


def _changes(
    before: dict[str, str],
    meters: Iterable[str],
    failed: dict[str, str],
    late: set[str],
    now: datetime,
) -> dict[str, str]:
    """The meters out after this poll, each with when its outage began, the changes logged. A
    meter the poll had no time for stays as it was; one no longer mapped is forgotten."""
    after: dict[str, str] = {}
    for id in meters:
        if id in late:
            if id in before:
                after[id] = before[id]
        elif id in failed:
            if id not in before:
                log.warning("modbus meter %s: no reading until it answers: %s", id, failed[id])
            after[id] = before.get(id, format_rfc3339(now))
        elif id in before:
            log.info("modbus meter %s answers again: no reading from %s until now", id, before[id])
    return after


def _cannot_keep(path: Path, error: OSError) -> None:
    log.warning(
        "cannot keep the modbus meters out in %s (%s): each poll logs them again",
        path,
        error.strerror,
    )


def _outages(file: IO[str]) -> dict[str, str]:
    """The meters out when the last poll ended, each with when its outage began: none if the
    file is new, or unreadable (its outages are then logged once more)."""
    try:
        file.seek(0)
        found = json.loads(file.read() or "{}")
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {id: since for id, since in found.items() if isinstance(since, str)}
