"""A local emulator of the Voltus API, for demos, for etl's tests, and for testing your handlers.

It serves `/2022-04-15/dispatches`, `/2022-04-15/dispatches/{id}` and `/2022-04-15/sites` from a
scenario, with the API's error shapes (400 without a key, 403 with a wrong one, 404; each with its
`message` and `type`, the name of its status), and can inject
faults: error statuses (500, 429 with Retry-After), slow responses, bodies that are not JSON or are
cut short. A scenario is a JSON file `{"dispatches": [...], "unlisted": [...], "sites": [...]}`;
a time written as `now`, `now+15m` or `now-2h` (units s, m, h, d) is taken relative to when the
emulator started.
The file is read again whenever it changes, so a running emulator follows your edits.
Unlike the real API, it does not drop dispatches older than 24 hours: a scenario's `unlisted`
dispatches are the ones known by id only, as the API's older than a day are.

It also takes webhook registrations (`GET`/`POST /2022-04-15/webhooks`, `DELETE
/2022-04-15/webhooks/{id}`) and pushes to each registered URL, as Voltus does, a
`dispatch.create` or `dispatch.update` notification when a dispatch appears or changes (in the
scenario file, or set by a test), retrying one that is not answered 2xx.

It plays the sites' controllers too, so that a rehearsal can fail: `POST /sandbox/actions` takes
the body etl's webhook handler sends (ETL_ACTION_WEBHOOK), and a site's emulated load is down
only from a curtail its controller took until a restore. A scenario's `failing_sites` have
controllers that answer 503; its `commands` are what the controllers took before it started.
"""

import contextlib
import itertools
import json
import math
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from etl.base.config import SANDBOX_KEY
from etl.base.errors import ConfigError
from etl.base.timeutil import format_rfc3339, parse_rfc3339, utcnow
from etl.source.api import API_VERSION, WEBHOOK_EVENTS
from etl.source.records import INTERVALS

__all__ = ["Faults", "Sandbox", "certification_scenario"]

RELATIVE_TIME = re.compile(r"^now(?:([+-])(\d+)([smhd]))?$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# certification/*.json: Voltus's integration tests 1 to 4 and its sandbox curtailing test
CERTIFICATION = ("basic", "ancillary", "two-programs", "cancelled", "curtailing")
TELEMETRY_MAX_SITES, TELEMETRY_MAX_POINTS = 10, 10_000
RESPONSE_DELAY = timedelta(minutes=1)  # an emulated site's load follows its commands this late
CONTROLLERS = "/sandbox/actions"  # where the emulated site controllers take etl's actions
MOST_BODY = 1 << 20  # bytes of a request body read; an action is a few hundred
PUSH_EVERY = 0.05  # seconds between two looks for changed dispatches
DELIVERY_ATTEMPTS = 5
# the program of a test dispatch that names none: the reference's example of a test dispatch
TEST_PROGRAM = {"id": 700, "name": "Voltus Communications Test", "timezone": "US/Eastern",
                "market": "", "program_type": "capacity"}  # fmt: skip


@dataclass
class Faults:
    """What the next responses do wrong; each count is used up one request at a time."""

    statuses: list[int] = field(default_factory=list)  # e.g. [500, 429]: the next two fail so
    statuses_path: str = "/"  # ... of the requests whose path starts with this
    message: str = "injected fault"  # ... with this message
    clock_offset_seconds: float = 0.0  # how far the Date header is ahead of the true time
    retry_after: str | None = None  # sent with each 429
    delay_seconds: float = 0.0  # before every response ...
    delay_path: str | None = None  # ... or only to the requests of exactly this path
    not_json: int = 0  # the next N successful responses have a body that is not JSON
    truncated: int = 0  # the next N successful responses are cut off mid-body
    any_telemetry: bool = False  # serve a site's readings whatever the window asked for
    most_points: int = 2048  # in a POST of telemetry; more is answered 413


@dataclass(frozen=True)
class SiteCommand:
    """An action an emulated site controller took: what etl's webhook handler sent, and when."""

    action: str  # curtail or restore
    site_id: str
    dispatch_id: str
    commitment_kw: float | None
    received_at: datetime
    idempotency_key: str | None = None  # None in a scenario's record of earlier commands


def site_command(value: Any, received_at: datetime) -> SiteCommand:
    """An action as etl's webhook handler sends it (docs/handlers.md), checked field by field:
    ValueError says which one is wrong."""
    if not isinstance(value, dict):
        raise ValueError("an action is a JSON object, as etl's webhook handler sends it")
    if value.get("action") not in ("curtail", "restore"):
        raise ValueError("'action' must be 'curtail' or 'restore'")
    for name in ("site_id", "dispatch_id"):
        if not isinstance(value.get(name), str) or not value[name]:
            raise ValueError(f"{name!r} must be a string")
    key = value.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError("'idempotency_key' must be a string")
    return SiteCommand(
        value["action"],
        value["site_id"],
        value["dispatch_id"],
        _kilowatts(value.get("commitment_kw")),
        received_at,
        key,
    )


def _kilowatts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer no float holds
            if math.isfinite(kw := float(value)):
                return kw
    raise ValueError("'commitment_kw' must be a number or null")


def scenario_commands(entries: Any) -> list[SiteCommand]:
    """A scenario's `commands`: what the site controllers took before the emulator started, each
    an action as the webhook sends it with its `received_at`, so that a dispatch that ended
    before a rehearsal can still show a response."""
    try:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("a list of actions, each with its 'received_at'")
        return [site_command(entry, parse_rfc3339(entry.get("received_at"))) for entry in entries]
    except ValueError as error:
        raise ConfigError(f"not a scenario: commands: {error}") from None


def failing_sites(value: Any) -> set[str]:
    """A scenario's `failing_sites`: the sites whose controllers answer 503 to every action."""
    if not isinstance(value, list) or not all(isinstance(site, str) for site in value):
        raise ConfigError("not a scenario: failing_sites: a list of site ids")
    return set(value)


def resolve_times(value: Any, anchor: datetime, speed: float = 1.0) -> Any:
    """Replace `now±N<unit>` strings anywhere in a scenario by RFC 3339 times; `speed` shrinks
    every offset, to replay a scenario faster."""
    if isinstance(value, dict):
        return {k: resolve_times(v, anchor, speed) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_times(v, anchor, speed) for v in value]
    if isinstance(value, str) and (match := RELATIVE_TIME.match(value)):
        sign, amount, unit = match.groups()
        offset = timedelta(**{UNITS[unit]: int(amount)}) / speed if amount else timedelta()
        return format_rfc3339(anchor - offset if sign == "-" else anchor + offset)
    return value


Published = list[tuple[datetime, Any]]  # one dispatch's states, each with when it is served


def published_states(scenario: Any) -> list[Published]:
    """Voltus's scenario format, `{"dispatches": {NAME: {"states": [{"published_time",
    "dispatch"}]}}}`: each dispatch's states, in the order they are published."""
    try:
        published = [
            sorted(
                ((parse_rfc3339(s["published_time"]), s["dispatch"]) for s in entry["states"]),
                key=lambda state: state[0],
            )
            for entry in scenario["dispatches"].values()
        ]
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ConfigError(f"not a Voltus scenario: {error}") from None
    if not all(published):
        raise ConfigError("not a Voltus scenario: a dispatch without states")
    return published


# one site's setpoints as a scenario publishes them: when, which site, and the points
PublishedSetpoints = tuple[datetime, str, list[dict[str, Any]]]
SETPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "timestamp": str,
    "interval_seconds": int,
    "units": str,
    "value": (int, float),
}


def published_setpoints(scenario: Any) -> list[PublishedSetpoints]:
    """Voltus's scenario `setpoints_timeseries`, as its integration notebook writes it (behind
    a display flag): `[{"site_id", "published_time", "setpoints": [{"timestamp",
    "interval_seconds", "units", "value"}]}]`, in the order published. Checked and kept, not
    served: neither the reference nor the notebook shows where Voltus serves setpoints (the
    published dispatch has no such field), and nothing is invented here."""
    entries = scenario.get("setpoints_timeseries") or []
    try:
        published = [
            (parse_rfc3339(e["published_time"]), e["site_id"], e["setpoints"]) for e in entries
        ]
        for _, site_id, points in published:
            if not isinstance(site_id, str) or not isinstance(points, list):
                raise ValueError("site_id is a string and setpoints a list")
            for point in points:
                for name, kind in SETPOINT_FIELDS.items():
                    if not isinstance(point[name], kind) or isinstance(point[name], bool):
                        raise ValueError(f"a setpoint's {name!r} is not a {kind}")
                parse_rfc3339(point["timestamp"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"not a Voltus scenario: setpoints_timeseries: {error}") from None
    return sorted(published, key=lambda entry: entry[0])


def load_scenario(path: Path | None, anchor: datetime, speed: float = 1.0) -> dict[str, Any]:
    """Ours (`{"dispatches": [...], ...}`) or Voltus's (`{"dispatches": {NAME: {"states"...}}}`,
    whose dispatches are served in their latest published state)."""
    source = path or files("etl.sandbox").joinpath("scenario.json")
    try:
        scenario = json.loads(source.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise ConfigError(f"cannot read scenario {source}: {error}") from None
    if not isinstance(scenario, dict):
        raise ConfigError(f"scenario {source} is not a JSON object")
    resolved = resolve_times(scenario, anchor, speed)
    voltus_format = isinstance(resolved.get("dispatches"), dict)
    loaded = {key: resolved.get(key, []) for key in ("dispatches", "unlisted", "sites")}
    loaded["telemetry"] = resolved.get("telemetry", {})
    loaded["commands"] = scenario_commands(resolved.get("commands", []))
    loaded["failing_sites"] = failing_sites(resolved.get("failing_sites", []))
    loaded["published"] = published_states(resolved) if voltus_format else []
    loaded["setpoints"] = published_setpoints(resolved) if voltus_format else []
    if voltus_format:
        loaded["dispatches"] = []
    return loaded


SITE_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def with_sites(loaded: dict[str, Any], site_ids: list[str] | None) -> dict[str, Any]:
    """The loaded scenario with each dispatch naming these sites instead of its own, at the
    commitment of its first (as Voltus's integration notebook names your site in every test),
    and GET /sites listing them, a meter each (the one the emulator's telemetry reads)."""
    if not site_ids:
        return loaded
    if bad := [s for s in site_ids if not SITE_ID.fullmatch(s)]:
        raise ConfigError(f"not a site id: {bad[0][:60]!r} (letters, digits, '.', '_', '-')")

    def renamed(dispatch: Any) -> Any:
        if not isinstance(dispatch, dict) or not isinstance(dispatch.get("sites"), list):
            return dispatch
        first = dispatch["sites"][0] if dispatch["sites"] else {}
        commitment = first.get("commitment") if isinstance(first, dict) else None
        sites = [
            {"id": s, "name": s, "customer_location_id": s, "commitment": commitment}
            for s in site_ids
        ]
        return {**dispatch, "sites": sites}

    return {
        **loaded,
        "dispatches": [renamed(d) for d in loaded["dispatches"]],
        "published": [[(at, renamed(d)) for at, d in states] for states in loaded["published"]],
        "sites": [
            {
                "id": s,
                "name": s,
                "customer_location_id": s,
                "meters": [{"id": f"{s}-m1", "name": "Main meter", "asset_type": "load"}],
            }
            for s in site_ids
        ],
    }


def certification_scenario(name: str) -> Path:
    """One of Voltus's integration tests, as a built-in scenario."""
    path = Path(str(files("etl.sandbox").joinpath("certification", f"{name}.json")))
    if name not in CERTIFICATION or not path.exists():
        raise ConfigError(
            f"no certification scenario {name!r}", f"one of {', '.join(CERTIFICATION)}"
        )
    return path


class Sandbox:
    """The emulator's state and server. Tests change `dispatches`, `sites` and `faults` directly
    (under `lock`); `etl sandbox` serves a scenario file and follows its changes."""

    def __init__(
        self,
        scenario_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        key: str = SANDBOX_KEY,
        speed: float = 1.0,
        site_ids: list[str] | None = None,
    ) -> None:
        self.anchor = utcnow()
        self.site_ids = site_ids  # the scenario's dispatches name these sites instead
        self.speed = speed
        self.key = key
        self.lock = threading.Lock()
        self.faults = Faults()
        self.requests: list[str] = []  # the path of each GET; `METHOD path` of the others
        self.webhooks: dict[str, dict[str, Any]] = {}
        self._webhook_numbers = itertools.count(1)
        self._test_numbers = itertools.count(1)
        self.pushed: list[tuple[str, str, int | str]] = []  # event, dispatch id, status or error
        self._stopped = threading.Event()
        self._scenario_path = scenario_path
        self._scenario_mtime = self._mtime()
        scenario = with_sites(load_scenario(scenario_path, self.anchor, speed), site_ids)
        self.dispatches: list[Any] = scenario["dispatches"]
        # a Voltus-format scenario's dispatches: each served in its latest published state
        self.published: list[Published] = scenario["published"]
        self.sites: list[Any] = scenario["sites"]
        # known by id but left out of the listing, as the API does with dispatches older than a day
        self.unlisted: list[Any] = scenario["unlisted"]
        # explicit readings by site id, [{meter_id, timestamp, value, ...}], served in place of
        # the synthetic load; and how late readings become available, as Voltus's do
        self.telemetry: dict[str, list[Any]] = scenario["telemetry"]
        self.telemetry_delay = timedelta()
        # readings POSTed to /telemetry (and /telemetry/controllable-load), de-duplicated as
        # Voltus does: (endpoint, meter or site, timestamp, interval, units) -> value
        self.received: dict[tuple[str, str, str, int, str], float] = {}
        # a Voltus-format scenario's setpoints_timeseries, kept as published (see
        # published_setpoints: not served)
        self.setpoints: list[PublishedSetpoints] = scenario["setpoints"]
        # the emulated site controllers: the actions they took (POST /sandbox/actions), in the
        # order received, and the scenario's record of those they took before
        self.commands: list[SiteCommand] = []
        self.earlier_commands: list[SiteCommand] = scenario["commands"]
        self.failing_sites: set[str] = scenario["failing_sites"]  # their controllers answer 503
        try:
            self._server = _Server((host, port), _handler_for(self))
        except OSError as error:
            raise ConfigError(
                f"the emulator cannot listen on {host}:{port}: {error.strerror}"
            ) from None
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._seen = self._dispatch_states()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self) -> None:
        threading.Thread(target=self._push_forever, daemon=True).start()
        # stop() waits for the loop's next look at its flag: a short one keeps that wait short
        self._server.serve_forever(poll_interval=0.02)

    def start(self) -> "Sandbox":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _mtime(self) -> float | None:
        return self._scenario_path.stat().st_mtime if self._scenario_path else None

    def _follow_scenario_file(self) -> None:
        if self._scenario_path is None or self._mtime() == self._scenario_mtime:
            return
        self._scenario_mtime = self._mtime()
        scenario = load_scenario(self._scenario_path, self.anchor, self.speed)
        scenario = with_sites(scenario, self.site_ids)
        self.dispatches, self.sites = scenario["dispatches"], scenario["sites"]
        self.unlisted = scenario["unlisted"]
        self.telemetry = scenario["telemetry"]
        self.published = scenario["published"]
        self.setpoints = scenario["setpoints"]
        self.earlier_commands = scenario["commands"]
        self.failing_sites = scenario["failing_sites"]

    def served(self) -> list[Any]:
        """The dispatches as the API shows them now (the caller holds the lock)."""
        now = utcnow()
        current = []
        for states in self.published:
            shown = [dispatch for published_at, dispatch in states if published_at <= now]
            if shown:
                current.append(shown[-1])
        return [*self.dispatches, *current]

    def control(
        self, path: str, method: str, body: bytes, too_long: bool, key: str | None
    ) -> tuple[int, bytes]:
        """The emulated site controllers: `POST /sandbox/actions` takes an action as etl's
        webhook handler sends it (its Idempotency-Key header, if sent, equal to the body's
        `idempotency_key`), answered 200 with the command as taken, once per key. Apart from the
        API: no API key, and the API's faults do not apply (`failing_sites` are this one's)."""
        if path.split("?", 1)[0] != CONTROLLERS:
            return 404, _error_body(404, f"no such endpoint: {path[:100]}")
        if method != "POST":
            return 405, _error_body(405, f"{method} is not allowed here: POST an action")
        if too_long:
            return 413, _error_body(413, f"an action has at most {MOST_BODY} bytes")
        try:
            command = site_command(json.loads(body), utcnow())
        except (ValueError, RecursionError) as error:  # a UnicodeDecodeError is a ValueError
            return 400, _error_body(400, f"not an action: {str(error)[:200]}")
        if command.idempotency_key is None:
            return 400, _error_body(400, "not an action: 'idempotency_key' is missing")
        if key not in (None, command.idempotency_key):
            return 400, _error_body(400, "the Idempotency-Key header is not the body's key")
        with self.lock:
            if command.site_id not in self._known_sites():
                return 404, _error_body(404, f"no site {command.site_id[:100]!r} here")
            if command.site_id in self.failing_sites:
                message = f"the controller of site {command.site_id!r} does not answer"
                return 503, _error_body(503, message)
            for taken in self.commands:
                if taken.idempotency_key == command.idempotency_key:
                    return 200, _command_body(taken)  # a retry: taken once already
            self.commands.append(command)
        return 200, _command_body(command)

    def _known_sites(self) -> set[Any]:
        """The sites listed, named by a dispatch, or commanded before (a restore may follow its
        dispatch's vanishing from the scenario)."""
        named = {
            site.get("id")
            for dispatch in [*self.served(), *self.unlisted]
            if isinstance(dispatch, dict) and isinstance(dispatch.get("sites"), list)
            for site in dispatch["sites"]
            if isinstance(site, dict)
        }
        listed = {site.get("id") for site in self.sites if isinstance(site, dict)}
        return named | listed | {command.site_id for command in self.commands}

    def respond(
        self, path: str, key: str | None, method: str = "GET", body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, extra headers and body for one request, faults included. A delayed answer
        is what the API said when asked, sent late: a slow listing is an old one."""
        with self.lock:
            self.requests.append(path if method == "GET" else f"{method} {path}")
            delayed = self.faults.delay_path in (None, path)
            delay = self.faults.delay_seconds if delayed else 0
            answer = self._answer(path, key, method, body)
        if delay:
            time.sleep(delay)
        return answer

    def _answer(
        self, path: str, key: str | None, method: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, extra headers and body for one request (the caller holds the lock)."""
        if self.faults.statuses and path.startswith(self.faults.statuses_path):
            status = self.faults.statuses.pop(0)
            headers = {}
            if status == 429 and self.faults.retry_after is not None:
                headers["Retry-After"] = self.faults.retry_after
            return status, headers, _error_body(status, self.faults.message)
        if key is None:
            return 400, {}, _error_body(400, "missing X-Voltus-API-Key header")
        if key != self.key:
            return 403, {}, _error_body(403, "Permission denied")
        try:
            self._follow_scenario_file()
        except ConfigError as error:
            return 500, {}, _error_body(500, str(error))
        route = path.split("?", 1)[0]
        if route == f"/{API_VERSION}/scenarios" and method == "POST":
            status, answer = self._post_scenario(body)
            return status, {}, answer
        if route.startswith(f"/{API_VERSION}/telemetry") and method == "POST":
            status, answer = self._receive_telemetry(route.removeprefix(f"/{API_VERSION}/"), body)
            return status, {}, answer
        if route == f"/{API_VERSION}/dispatches" and method == "POST":
            status, answer = self._create_test_dispatch(body)
            return status, {}, answer
        if route.startswith(f"/{API_VERSION}/webhooks"):
            status, answer = self._webhooks(method, path, body)
            return status, {}, answer
        if method != "GET":
            return 405, {}, _error_body(405, f"{method} is not allowed here")
        status, body = self._route(path)
        if status == 200 and self.faults.not_json:
            self.faults.not_json -= 1
            return 200, {}, b"<html>this is not JSON</html>"
        if status == 200 and self.faults.truncated:
            self.faults.truncated -= 1
            return 200, {"X-Truncate": "1"}, body
        return status, {}, body

    def _route(self, path: str) -> tuple[int, bytes]:
        prefix = f"/{API_VERSION}/"
        resource = path.split("?", 1)[0].removeprefix(prefix) if path.startswith(prefix) else ""
        if resource == "dispatches":
            return 200, _json({"dispatches": self.served(), "page": 0, "perPage": 0})
        if resource == "sites":
            return 200, _json({"sites": self.sites, "page": 0, "perPage": 0})
        if resource == "telemetry/kw":
            return self._telemetry(parse_qs(path.partition("?")[2]))
        if resource.startswith("dispatches/"):
            wanted = unquote(resource.removeprefix("dispatches/"))
            for dispatch in [*self.served(), *self.unlisted]:
                if isinstance(dispatch, dict) and dispatch.get("id") == wanted:
                    return 200, _json(dispatch)
            return 404, _error_body(404, f"dispatch {wanted} not found")
        return 404, _error_body(404, f"no such endpoint: {path}")

    def _receive_telemetry(self, resource: str, body: bytes) -> tuple[int, bytes]:
        """POST /telemetry or /telemetry/controllable-load, under the reference's rules: at
        most `most_points` points (else 413), an interval a multiple of 30 up to 300 seconds,
        a timestamp, a number; a meter of the account, or a site of one meter; one units per
        request but a battery's kW and kWh together. Any point wrong fails the whole request."""
        field = {"telemetry": "telemetry", "telemetry/controllable-load": "controllable_load"}
        if resource not in field:
            return 404, _error_body(404, f"no such endpoint: {resource}")
        try:
            points = json.loads(body)[field[resource]]
            if not isinstance(points, list):
                raise TypeError("not a list")
        except (ValueError, KeyError, TypeError, RecursionError):
            return 400, _error_body(400, f"the body must be {{{field[resource]!r}: [...]}}")
        if len(points) > self.faults.most_points:
            return 413, _error_body(413, f"at most {self.faults.most_points} points a request")
        meters = {
            m.get("id"): (site.get("id"), m.get("asset_type"))
            for site in self.sites
            for m in site.get("meters") or []
        }
        single = {
            s.get("id"): s["meters"][0] for s in self.sites if len(s.get("meters") or []) == 1
        }
        received: dict[tuple[Any, ...], Any] = {}
        units_of: dict[str, set[str]] = {}
        for point in points:
            try:
                problem = self._point_problem(resource, point, meters, single)
            except (TypeError, AttributeError):
                problem = "a point is not an object"
            if problem:
                return 400, _error_body(400, problem)
            target = point.get("meter_id") or point.get("site_id")
            kind = meters.get(point.get("meter_id"), (None, None))[1]
            if point.get("site_id") in single:
                kind = single[point["site_id"]].get("asset_type")
            units_of.setdefault("battery:" + target if kind == "battery" else "others", set()).add(
                point["units"]
            )
            key = (resource, target, point["timestamp"], point["interval_seconds"], point["units"])
            received[key] = point["value"]
        for group, units in units_of.items():
            if group == "others" and len(units) > 1:
                return 400, _error_body(400, "one request must use the same units for all")
            if group != "others" and units != {"kW", "kWh"}:
                return 400, _error_body(400, "a battery meter's request needs both kW and kWh")
        self.received |= received
        return 200, b""

    def _point_problem(
        self, resource: str, point: Any, meters: dict[Any, Any], single: dict[Any, Any]
    ) -> str | None:
        interval = point.get("interval_seconds")
        if type(interval) is not int or interval % 30 or not 30 <= interval <= 300:
            return "interval_seconds must be divisible by 30 and at most 300"
        try:
            parse_rfc3339(point.get("timestamp"))
        except ValueError:
            return "timestamp must be RFC 3339"
        value = point.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "value must be a number"
        if resource != "telemetry":
            known = {s.get("id") for s in self.sites}
            if point.get("site_id") not in known or point.get("units") != "kW":
                return "controllable load needs a site_id of the account and units kW"
            return None
        if point.get("units") not in ("kW", "kWh"):
            return "units must be kW or kWh"
        if ("meter_id" in point) == ("site_id" in point):
            return "give meter_id or site_id, not both"
        if "meter_id" in point and point["meter_id"] not in meters:
            return f"no meter {point['meter_id']!r} in this account"
        if "site_id" in point and point["site_id"] not in single:
            return "site_id is for a site with one meter"
        return None

    def _create_test_dispatch(self, body: bytes) -> tuple[int, bytes]:
        """POST /dispatches, as the reference describes it: a dispatch with `test` true, of the
        account's sites (commitment 0, as in the reference's example of one) in the program
        named or Voltus's test program, starting within 72 hours; answered 200 with no body."""
        try:
            request = json.loads(body)
            start, end = parse_rfc3339(request["start_time"]), parse_rfc3339(request["end_time"])
            program_id = request.get("program_id")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            message = "A test dispatch needs 'start_time' and 'end_time' (RFC 3339)"
            return 400, _error_body(400, message)
        now = utcnow()
        if not now - timedelta(minutes=1) <= start < end <= now + timedelta(hours=72):
            message = "start_time must be in the future, end_time after it, within 72 hours"
            return 400, _error_body(400, message)
        programs = {d["program"].get("id"): d["program"] for d in self.served() if _is_dispatch(d)}
        program = TEST_PROGRAM if program_id is None else programs.get(program_id)
        if program is None:
            return 400, _error_body(400, f"no program {program_id!r} with registered sites")
        sites = [
            {**{k: s[k] for k in ("id", "name", "customer_location_id")}, "commitment": 0}
            for s in self.sites
        ]
        self.dispatches.append(
            {
                "id": f"test{next(self._test_numbers)}",
                "authorized": True,
                "test": True,
                "creation_time": format_rfc3339(now),
                "modification_number": 0,
                "start_time": format_rfc3339(start),
                "end_time": format_rfc3339(end),
                "program": program,
                "sites": sites,
            }
        )
        return 200, b""

    def _post_scenario(self, body: bytes) -> tuple[int, bytes]:
        """Voltus's scenario format: it replaces the dispatches served; its relative times count
        from now (and `speed`)."""
        try:
            scenario = resolve_times(json.loads(body), utcnow(), self.speed)
            published, setpoints = published_states(scenario), published_setpoints(scenario)
        except (ValueError, ConfigError, RecursionError) as error:
            return 400, _error_body(400, f"not a scenario: {error}")
        self.dispatches, self.published, self.setpoints = [], published, setpoints
        return 200, _json({"name": scenario.get("name"), "dispatches": len(self.published)})

    def _telemetry(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        """/telemetry/kw within the API's limits: at most 10 sites, times aligned to 30 s, a
        known interval, at most 10,000 points per site; readings of intervals ending in
        (start_time, end_time], and none later than now less `telemetry_delay`."""
        site_ids = query.get("site_id", [])
        try:
            start = parse_rfc3339(query["start_time"][0])
            end = parse_rfc3339(query.get("end_time", [format_rfc3339(utcnow())])[0])
            interval = int(query["interval_seconds"][0])
        except (KeyError, ValueError):
            return 400, _error_body(400, "start_time and interval_seconds are required")
        problem = None
        if not 1 <= len(site_ids) <= TELEMETRY_MAX_SITES:
            problem = f"between 1 and {TELEMETRY_MAX_SITES} site_id"
        elif any(t.microsecond or t.second % 30 for t in (start, end)):
            problem = "start_time and end_time must be aligned to 30 seconds"
        elif interval not in INTERVALS or end <= start:
            problem = "interval_seconds or the time range is not valid"
        elif (end - start).total_seconds() / interval > TELEMETRY_MAX_POINTS:
            problem = f"at most {TELEMETRY_MAX_POINTS} points per site per request"
        if problem:
            return 400, _error_body(400, problem)
        latest = min(end, utcnow() - self.telemetry_delay)
        sites = [
            {"site_id": site_id, "meters": self._meters(site_id, start, latest, interval)}
            for site_id in site_ids
        ]
        return 200, _json({"data": {"sites": sites}})

    def _meters(
        self, site_id: str, start: datetime, latest: datetime, interval: int
    ) -> list[dict[str, Any]]:
        if site_id in self.telemetry:
            by_meter: dict[str, list[Any]] = {}
            for reading in self.telemetry[site_id]:
                served = {"interval_seconds": interval, "units": "kW", **reading}
                meter_id = served.pop("meter_id", f"{site_id}-m1")
                if self.faults.any_telemetry or _served_in(served, start, latest, interval):
                    by_meter.setdefault(meter_id, []).append(served)
            return [{"meter_id": m, "telemetry": r} for m, r in by_meter.items()]
        commands = sorted(
            (c for c in [*self.earlier_commands, *self.commands] if c.site_id == site_id),
            key=lambda command: command.received_at,
        )
        readings = []
        at = start + timedelta(seconds=interval - start.timestamp() % interval)
        while at <= latest:
            readings.append(
                {
                    "interval_seconds": interval,
                    "timestamp": format_rfc3339(at),
                    "units": "kW",
                    "value": _load(site_id, at, commands),
                }
            )
            at += timedelta(seconds=interval)
        return [{"meter_id": f"{site_id}-m1", "telemetry": readings}]

    def _webhooks(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """The account's webhook registrations (the caller holds the lock)."""
        wanted = path.split("?", 1)[0].removeprefix(f"/{API_VERSION}/webhooks").strip("/")
        if method == "GET" and not wanted:
            return 200, _json({"webhooks": list(self.webhooks.values()), "page": 0, "perPage": 0})
        if method == "POST" and not wanted:
            try:
                request = json.loads(body)
                url, events = request["url"], [e["name"] for e in request["events"]]
            except (ValueError, KeyError, TypeError):
                message = "A create webhook request must contain an 'url' and 'events' field"
                return 400, _error_body(400, message)
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return 400, _error_body(400, "'url' must be an http(s) URL")
            if not events or any(e not in WEBHOOK_EVENTS for e in events):
                return 400, _error_body(400, f"events must be among {WEBHOOK_EVENTS}")
            # "we will send a test request to the provided URL ... If it does not succeed, the
            # webhook creation request will fail" (the reference, POST /webhooks)
            answered = _post(url, _json({"event": {"name": ""}, "resource": ""}))
            if not (isinstance(answered, int) and 200 <= answered < 300):
                message = f"the test request to the webhook URL failed: {answered}"
                return 400, _error_body(400, message)
            webhook_id = f"wh{next(self._webhook_numbers)}"  # never reused, as deletes leave gaps
            self.webhooks[webhook_id] = {
                "id": webhook_id,
                "url": url,
                "events": [{"name": e} for e in events],
            }
            return 200, _json(self.webhooks[webhook_id])
        if method == "DELETE" and wanted in self.webhooks:
            del self.webhooks[wanted]
            return 200, _json({})
        return 404, _error_body(404, f"no webhook {wanted!r}")

    def _dispatch_states(self) -> dict[str, str]:
        return {
            d["id"]: json.dumps(d, sort_keys=True)
            for d in self.served()
            if isinstance(d, dict) and isinstance(d.get("id"), str)
        }

    def _push_forever(self) -> None:
        while not self._stopped.wait(PUSH_EVERY):
            with self.lock:
                try:
                    self._follow_scenario_file()
                except ConfigError:
                    continue  # a half-written file: the next look reads it whole
                states, before = self._dispatch_states(), self._seen
                self._seen = states
                targets = [
                    (hook["url"], {e["name"] for e in hook["events"]})
                    for hook in self.webhooks.values()
                ]
            for dispatch_id, state in states.items():
                event = "dispatch.create" if dispatch_id not in before else "dispatch.update"
                if before.get(dispatch_id) == state:
                    continue
                for url, events in targets:
                    if event in events:
                        threading.Thread(
                            target=self._deliver, args=(url, event, dispatch_id), daemon=True
                        ).start()

    def _deliver(self, url: str, event: str, dispatch_id: str) -> None:
        """POST one notification, as Voltus does: retried until answered 2xx, a few times."""
        resource = f"/{API_VERSION}/dispatches/{dispatch_id}"
        body = _json({"event": {"name": event}, "resource": resource})
        outcome: int | str = "not sent"
        for attempt in range(DELIVERY_ATTEMPTS):
            outcome = _post(url, body)
            if isinstance(outcome, int) and outcome < 300:
                break
            if self._stopped.wait(0.2 * 2**attempt):
                break
        with self.lock:
            self.pushed.append((event, dispatch_id, outcome))


def _is_dispatch(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("program"), dict)


def _post(url: str, body: bytes) -> int | str:
    """POST a JSON body as Voltus does to a webhook: the status answered, or the error's name."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return type(error).__name__


def _served_in(reading: dict[str, Any], start: datetime, latest: datetime, interval: int) -> bool:
    """Whether a scenario's reading answers a request; a malformed one always does, as the bad
    data it is there to be."""
    try:
        at = parse_rfc3339(reading.get("timestamp"))
    except ValueError:
        return True
    return start < at <= latest and reading.get("interval_seconds") == interval


def _load(site_id: str, at: datetime, commands: list[SiteCommand]) -> float:
    """A steady load with a little noise, less what the site's controller has curtailed: each
    of its `commands` (in the order received) takes effect a minute after it came, a curtail by
    its commitment until a restore, which ends them all (etl restores a site once, when no
    dispatch holds it any more). A curtail that never came lowers nothing."""
    seed = zlib.crc32(site_id.encode())
    noise = (zlib.crc32(f"{site_id}{at.timestamp()}".encode()) % 200 - 100) / 100
    curtailed: dict[str, float] = {}  # by dispatch: a new episode's curtail replaces its last
    for command in commands:
        if command.received_at + RESPONSE_DELAY > at:
            break
        if command.action == "restore":
            curtailed.clear()
        else:
            curtailed[command.dispatch_id] = command.commitment_kw or 0.0
    return round(100.0 + seed % 50 + noise - sum(curtailed.values()), 3)


def _command_body(command: SiteCommand) -> bytes:
    return _json({**asdict(command), "received_at": format_rfc3339(command.received_at)})


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


# the reference's error `type`: "the name of the http status code that is used in the response"
ERROR_TYPES = {403: "Unauthorized", 413: "Content Too Large"}


def _error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status) or HTTPStatus(status).phrase
    return _json({"message": message, "type": kind})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer was written (its timeout, a test's truncated body) is
        its own business: no traceback on stderr, where it reads as the emulator's failure."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def _answer(self, method: str) -> None:
            declared = self.headers.get("Content-Length", "0")
            length = int(declared) if declared.isascii() and declared.isdigit() else 0
            request_body = self.rfile.read(min(length, MOST_BODY))
            left = length - len(request_body)
            # the rest read and dropped: a body left unread resets the connection, and the
            # sender may never see the answer
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
            if self.path.startswith("/sandbox/"):
                key = self.headers.get("Idempotency-Key")
                status, body = sandbox.control(
                    self.path, method, request_body, length > MOST_BODY, key
                )
                headers: dict[str, str] = {}
            else:
                key = self.headers.get("X-Voltus-API-Key")
                status, headers, body = sandbox.respond(self.path, key, method, request_body)
            truncate = headers.pop("X-Truncate", None)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            # a truncated body: promise the whole length, send half, then close the connection
            self.wfile.write(body[: len(body) // 2] if truncate else body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the demo's output

        def date_time_string(self, timestamp: float | None = None) -> str:
            moment = time.time() if timestamp is None else timestamp
            return super().date_time_string(moment + sandbox.faults.clock_offset_seconds)

    return Handler
