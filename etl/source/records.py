"""Typed records of what the API sends, and their validation.

Nothing past the API client handles raw dicts: a response is turned into these records here, and a
record that does not validate is set aside whole with its reason (a `Rejected`), never half-used.
Unknown extra fields are tolerated; the dispatch's whole raw object is kept alongside.
"""

import marshal
import math
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from etl.base.payloads import JSON_MAX_DEPTH, Rejected, check_json, fingerprint
from etl.base.timeutil import parse_rfc3339
from etl.base.vocabulary import RecordKind
from etl.source.jsonscan import TooDeep

__all__ = [
    "INTERVALS",
    "MAX_KW",
    "MIN_READING_KW",
    "Dispatch",
    "Program",
    "Reading",
    "SiteBatch",
    "TelemetryBatch",
    "has_unknown_fields",
    "item_fingerprint",
    "parse_dispatch",
    "parse_dispatches",
    "parse_sites",
    "parse_telemetry",
    "record_id",
]


@dataclass(frozen=True, slots=True)
class Program:
    id: int
    name: str
    timezone: str
    market: str
    program_type: str


@dataclass(frozen=True, slots=True)
class DispatchSite:
    id: str
    name: str
    customer_location_id: str
    commitment_kw: float | None


@dataclass(frozen=True, slots=True)
class Dispatch:
    id: str
    authorized: bool
    test: bool
    start_time: datetime
    end_time: datetime | None
    creation_time: datetime | None
    modification_number: int | None
    metadata: dict[str, Any] | None
    program: Program
    sites: tuple[DispatchSite, ...]
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Meter:
    id: str
    name: str
    asset_type: str


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    customer_location_id: str
    meters: tuple[Meter, ...]


@dataclass(frozen=True, slots=True)
class Reading:
    """One meter's mean kW over one interval, which ends at `interval_end`."""

    site_id: str
    meter_id: str
    interval_end: datetime
    interval_seconds: int
    kw: float


@dataclass(frozen=True, slots=True)
class DispatchBatch:
    dispatches: list[Dispatch]
    rejected: list[Rejected]


@dataclass(frozen=True, slots=True)
class SiteBatch:
    sites: list[Site]
    rejected: list[Rejected]


# the fields that etl keeps in columns; a record with others is also kept whole, as sent
DISPATCH_FIELDS = {
    "id", "authorized", "test", "start_time", "end_time", "creation_time",
    "modification_number", "metadata", "program", "sites",
}  # fmt: skip
PROGRAM_FIELDS = {"id", "name", "timezone", "market", "program_type"}
SITE_FIELDS = {"id", "name", "customer_location_id", "commitment", "drop_by"}


def has_unknown_fields(raw: dict[str, Any]) -> bool:
    return (
        not raw.keys() <= DISPATCH_FIELDS
        or not raw["program"].keys() <= PROGRAM_FIELDS
        or any(not site.keys() <= SITE_FIELDS for site in raw["sites"])
    )


class Unmodeled:
    """What a dispatch record holds that etl does not model, as sent: the dispatch's own fields,
    its program's, and those of the entry of each of its sites; read once for all its sites (a
    fleet's dispatch lists thousands, each told its own)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        program = raw["program"] if isinstance(raw.get("program"), dict) else {}
        entries = raw["sites"] if isinstance(raw.get("sites"), list) else []
        self._shared = {
            "dispatch": {k: v for k, v in raw.items() if k not in DISPATCH_FIELDS},
            "program": {k: v for k, v in program.items() if k not in PROGRAM_FIELDS},
        }
        self._sites: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                fields = {k: v for k, v in entry.items() if k not in SITE_FIELDS}
                self._sites.setdefault(entry["id"], fields)  # the first entry of an id

    def of(self, site_id: str) -> dict[str, dict[str, Any]]:
        """The parts for this site that have any."""
        parts = {**self._shared, "site": self._sites.get(site_id, {})}
        # copies: each request its own, whatever a handler does with one
        return {part: dict(fields) for part, fields in parts.items() if fields}


def item_fingerprint(item: Any) -> str:
    """A fingerprint of one record as decoded, to tell whether it changed since last time: of
    its marshal form, the cheapest exact one (half the cost of its repr, a third of canonical
    JSON's). Version 2, the last without back-references: theirs depend on which objects the
    decoder happened to share, so one record's bytes could differ from one listing to the next.
    Should the API reorder its fields (or a new Python change the form), each record is compared
    field by field once, and nothing spurious is recorded."""
    return fingerprint(marshal.dumps(item, 2))


# What the store and the handlers can hold (docs/api.md, "What a fetch guarantees"): a record
# outside these bounds is set aside whole, with the reason.
ID_MAX_CHARS = 200  # Voltus's ids are short; a longer one is not an id
TEXT_MAX_CHARS = 1000  # names, time zones, customer locations
INT_RANGE = (-(2**31), 2**31 - 1)  # the columns' INTEGER on PostgreSQL
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
IntOrNone = TypeVar("IntOrNone", int, int | None)
# characters no id or name may hold: control characters (they forge lines in output and logs),
# line and paragraph separators, and lone surrogates (not encodable in UTF-8)
FORBIDDEN_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise ValueError(f"{where}: missing '{name}'")
    value = obj[name]
    # bool is an int in Python; a true/false where a number belongs is still malformed
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{where}: '{name}' is {type(value).__name__}, not {_kind_name(kind)}")
    return value


def _optional(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    return None if obj.get(name) is None else _field(obj, name, kind, where)


def _text(
    obj: dict[str, Any], name: str, where: str, required: bool = False, limit: int = TEXT_MAX_CHARS
) -> str:
    value = _field(obj, name, str, where) if required else _optional(obj, name, str, where)
    value = value or ""
    if required and not value:
        raise ValueError(f"{where}: '{name}' is empty")
    if len(value) > limit:
        raise ValueError(f"{where}: '{name}' is {len(value)} characters long (at most {limit})")
    # isprintable() is false for every forbidden category: the exact check, a character at a
    # time, runs only for the rare value that has a character of some other non-printable kind
    if not value.isprintable() and any(
        unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in value
    ):
        raise ValueError(f"{where}: '{name}' has a control character: {_shown(value)}")
    return value


def _id(obj: dict[str, Any], where: str) -> str:
    return _text(obj, "id", where, required=True, limit=ID_MAX_CHARS)


def _in_range(value: IntOrNone, name: str, where: str) -> IntOrNone:
    low, high = INT_RANGE
    if value is not None and not low <= value <= high:
        raise ValueError(f"{where}: '{name}' is out of range: {_shown(value)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {type(value).__name__}, not an object")
    return value


def _time(obj: dict[str, Any], name: str, where: str) -> datetime:
    try:
        value = parse_rfc3339(obj[name])
    except ValueError as error:
        raise ValueError(f"{where}: '{name}': {error}") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{where}: '{name}' is out of range: {_shown(obj[name])}")
    return value


def parse_program(value: Any) -> Program:
    usual = _usual_program(value) if type(value) is dict else None
    return usual if usual is not None else _checked_program(value)


def _checked_program(value: Any) -> Program:
    obj = _object(value, "program")
    return Program(
        id=_in_range(_field(obj, "id", int, "program"), "id", "program"),
        name=_text(obj, "name", "program", required=True),
        timezone=_text(obj, "timezone", "program", required=True),
        market=_text(obj, "market", "program"),
        program_type=_text(obj, "program_type", "program") or "not_specified",
    )


def _usual_program(obj: dict[str, Any]) -> Program | None:
    """The program as parse_program reads it, when each field is of the usual kind (a text a
    printable str within its bound, the id an int in range); otherwise None, and the checks
    field by field say what is wrong. Half their cost: every dispatch has a program."""
    program_id, name, zone = obj.get("id"), obj.get("name"), obj.get("timezone")
    market, kind = obj.get("market", ""), obj.get("program_type", "")
    if not (
        type(program_id) is int
        and INT_RANGE[0] <= program_id <= INT_RANGE[1]
        and type(name) is str
        and type(zone) is str
        and type(market) is str
        and type(kind) is str
        and 0 < len(name) <= TEXT_MAX_CHARS
        and 0 < len(zone) <= TEXT_MAX_CHARS
        and len(market) <= TEXT_MAX_CHARS
        and len(kind) <= TEXT_MAX_CHARS
        and (name + zone + market + kind).isprintable()  # no character that a text refuses
    ):
        return None
    return Program(program_id, name, zone, market, kind or "not_specified")


# a site's load or commitment beyond this is no site's (1e308 overflowed the reports' sums)
MAX_KW = 1_000_000.0
MIN_COMMITMENT_KW = 0.001  # a commitment other than 0 under this is no commitment
MIN_READING_KW = 0.000001  # no meter reads a load other than 0 under this


def _physical_kw(kw: float, what: str) -> None:
    if not -MAX_KW <= kw <= MAX_KW:
        raise ValueError(f"{what} is {kw:g} kW, beyond ±{MAX_KW:,.0f} kW")


def parse_dispatch_site(value: Any, index: int) -> DispatchSite:
    usual = _usual_site(value) if type(value) is dict else None
    return usual if usual is not None else _checked_site(value, index)


def _checked_site(value: Any, index: int) -> DispatchSite:
    where = f"sites[{index}]"
    obj = _object(value, where)
    # `drop_by` is the deprecated alias of `commitment`: used only when commitment is absent
    amount_field = "commitment" if "commitment" in obj else "drop_by"
    amount = _optional(obj, amount_field, (int, float), where)
    try:
        commitment = None if amount is None else float(amount)
    except OverflowError:  # an integer too large for a float
        commitment = math.inf
    if commitment is not None:
        if not math.isfinite(commitment):
            raise ValueError(f"{where}: '{amount_field}' is not a finite number")
        _physical_kw(commitment, f"{where}: '{amount_field}'")
        if 0 < abs(commitment) < MIN_COMMITMENT_KW:
            # reports divide by it: 5e-324 overflowed them
            raise ValueError(f"{where}: '{amount_field}' is {commitment:g} kW, under a watt")
    return DispatchSite(
        id=_id(obj, where),
        name=_text(obj, "name", where),
        customer_location_id=_text(obj, "customer_location_id", where),
        commitment_kw=commitment,
    )


def _usual_site(obj: dict[str, Any]) -> DispatchSite | None:
    """The entry as parse_dispatch_site reads it, when each field is of the usual kind (a text a
    printable str within its bound, the commitment absent, null or a number within its bounds);
    otherwise None, and the checks field by field say what is wrong. Half their cost: a fleet's
    dispatch lists thousands of sites."""
    site_id = obj.get("id")
    name, location = obj.get("name", ""), obj.get("customer_location_id", "")
    amount = obj["commitment"] if "commitment" in obj else obj.get("drop_by")
    if not (
        type(site_id) is str
        and type(name) is str
        and type(location) is str
        and 0 < len(site_id) <= ID_MAX_CHARS
        and len(name) <= TEXT_MAX_CHARS
        and len(location) <= TEXT_MAX_CHARS
        and (site_id + name + location).isprintable()  # no character that a text refuses
    ):
        return None
    if amount is None:
        return DispatchSite(site_id, name, location, None)
    number = type(amount) is float or type(amount) is int  # not a bool
    # NaN fails both comparisons, and an integer too large for a float the second
    if number and (amount == 0 or MIN_COMMITMENT_KW <= abs(amount) <= MAX_KW):
        return DispatchSite(site_id, name, location, float(amount))
    return None


def _readable(value: Any, where: str) -> dict[str, Any]:
    """A listing's record as an object: one the parser could not read (TooDeep) is refused."""
    if isinstance(value, TooDeep):
        raise ValueError(f"{where}: nested deeper than {JSON_MAX_DEPTH} levels (too deep to read)")
    return _object(value, where)


def _rejected(kind: RecordKind, item: Any, reason: str) -> Rejected:
    """A record set aside: of one too deep to read, what can be kept is its excerpt."""
    payload = item.excerpt if isinstance(item, TooDeep) else item
    return Rejected(kind, record_id(item), reason, payload)


def parse_dispatch(value: Any) -> Dispatch:
    obj = _readable(value, "dispatch")
    dispatch_id = _id(obj, "dispatch")
    _field(obj, "start_time", str, "dispatch")
    sites = _field(obj, "sites", list, "dispatch")
    parsed_sites = tuple(parse_dispatch_site(site, i) for i, site in enumerate(sites))
    site_ids = [site.id for site in parsed_sites]
    if len(set(site_ids)) != len(site_ids):
        raise ValueError("dispatch: a site appears twice in 'sites'")
    modification = _in_range(
        _optional(obj, "modification_number", int, "dispatch"), "modification_number", "dispatch"
    )
    if modification is not None and modification < 0:
        raise ValueError(f"dispatch: 'modification_number' is negative: {modification}")
    dispatch = Dispatch(
        id=dispatch_id,
        authorized=_field(obj, "authorized", bool, "dispatch"),
        test=_field(obj, "test", bool, "dispatch"),
        start_time=_time(obj, "start_time", "dispatch"),
        end_time=None if obj.get("end_time") is None else _time(obj, "end_time", "dispatch"),
        creation_time=(
            None if obj.get("creation_time") is None else _time(obj, "creation_time", "dispatch")
        ),
        modification_number=modification,
        metadata=_optional(obj, "metadata", dict, "dispatch"),
        program=parse_program(obj.get("program")),
        sites=parsed_sites,
        raw=obj,
    )
    if dispatch.end_time is not None and dispatch.end_time <= dispatch.start_time:
        # a window that ends before it starts has no length to curtail in, or to report on
        raise ValueError("dispatch: 'end_time' is not after 'start_time'")
    _check_unread(obj)  # after the fields: their own reasons say more
    return dispatch


# the fields of a dispatch record that parse_dispatch reads (and so checks): the metadata is
# kept as sent, unread
READ_DISPATCH_FIELDS = DISPATCH_FIELDS - {"metadata"}
READ_BESIDE_COMMITMENT = SITE_FIELDS - {"drop_by"}  # the alias is read only in its absence


def _check_unread(obj: dict[str, Any]) -> None:
    """check_json of the record less what the fields' own checks read (a bool, an int, a time,
    a printable text or a finite number in range, which check_json passes): its metadata, the
    fields etl does not model, and a site's `drop_by` beside its `commitment`. These are walked
    where the record holds them, in its order and at their depths, so that it is refused exactly
    when a walk of the whole record would refuse it, with the same reason, at a quarter of its
    cost for a fleet's dispatch of thousands of sites (0.6 of it for a dispatch of 4)."""
    unread: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "program":
            unread[key] = {k: v for k, v in value.items() if k not in PROGRAM_FIELDS}
        elif key == "sites":
            unread[key] = [_unread_of_entry(entry) for entry in value if not _all_read(entry)]
        elif key not in READ_DISPATCH_FIELDS:
            unread[key] = value
    check_json(unread, "dispatch")


def _all_read(entry: dict[str, Any]) -> bool:
    """Whether a site entry has nothing check_json could refuse beyond what was read: the usual
    entry, its modeled fields alone and its alias (read or not) a finite number or null."""
    alias = entry.get("drop_by")
    return entry.keys() <= SITE_FIELDS and (
        alias is None or type(alias) is int or (type(alias) is float and math.isfinite(alias))
    )


def _unread_of_entry(entry: dict[str, Any]) -> dict[str, Any]:
    read = READ_BESIDE_COMMITMENT if "commitment" in entry else SITE_FIELDS
    return {k: v for k, v in entry.items() if k not in read}


def parse_site(value: Any) -> Site:
    obj = _readable(value, "site")
    meters = _optional(obj, "meters", list, "site") or []
    parsed_meters = []
    for i, meter in enumerate(meters):
        where = f"meters[{i}]"
        meter_obj = _object(meter, where)
        parsed_meters.append(
            Meter(
                id=_id(meter_obj, where),
                name=_text(meter_obj, "name", where),
                # compared in lower case everywhere (the views' roles, telemetry's battery):
                # `POI` is a POI
                asset_type=_text(meter_obj, "asset_type", where).lower(),
            )
        )
    site = Site(
        id=_id(obj, "site"),
        name=_text(obj, "name", "site"),
        customer_location_id=_text(obj, "customer_location_id", "site"),
        meters=tuple(parsed_meters),
    )
    check_json(obj, "site")
    return site


def record_id(value: Any) -> str | None:
    """The id of a malformed record, if it is one the store can hold as an id."""
    if isinstance(value, TooDeep):
        value = {"id": value.id}
    try:
        return _id(value, "record") if isinstance(value, dict) else None
    except ValueError:
        return None


def parse_dispatches(items: list[Any]) -> DispatchBatch:
    dispatches: list[Dispatch] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for item in items:
        try:
            dispatch = parse_dispatch(item)
        except ValueError as error:
            rejected.append(_rejected(RecordKind.DISPATCH, item, str(error)))
            continue
        if dispatch.id in seen:
            rejected.append(
                Rejected(RecordKind.DISPATCH, dispatch.id, "dispatch: duplicate 'id'", item)
            )
            continue
        seen.add(dispatch.id)
        dispatches.append(dispatch)
    return DispatchBatch(dispatches, rejected)


INTERVALS = (30, 60, 300, 900, 1800, 3600, 21600)  # seconds, as /telemetry/kw serves them


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    readings: list[Reading]
    rejected: list[Rejected]


def parse_reading(site_id: str, meter_id: str, value: Any) -> Reading:
    where = "reading"
    obj = _object(value, where)
    units = _field(obj, "units", str, where)
    if units.lower() != "kw":
        raise ValueError(f"{where}: units {_shown(units)}, not kW")
    value = _field(obj, "value", (int, float), where)
    try:
        kw = float(value)
    except OverflowError:  # an integer too large for a float
        kw = math.inf
    if not math.isfinite(kw):
        raise ValueError(f"{where}: 'value' is not finite ({kw})")
    _physical_kw(kw, f"{where}: 'value'")
    if 0 < abs(kw) < MIN_READING_KW:  # 5e-324 underflowed the reports on PostgreSQL
        raise ValueError(f"{where}: 'value' is {kw:g} kW, under a milliwatt")
    interval = _field(obj, "interval_seconds", int, where)
    if interval not in INTERVALS:
        raise ValueError(f"{where}: 'interval_seconds' is {_shown(interval)}, not in {INTERVALS}")
    return Reading(site_id, meter_id, _time(obj, "timestamp", where), interval, kw)


def _telemetry_id(obj: dict[str, Any], name: str, where: str) -> str:
    return _text(obj, name, where, required=True, limit=ID_MAX_CHARS)


def parse_telemetry(body: Any) -> TelemetryBatch:
    """`{"data": {"sites": [{"site_id", "meters": [{"meter_id", "telemetry": [...]}]}]}}`: a
    malformed reading is set aside with its site and meter; a malformed site or meter, whole."""
    batch = TelemetryBatch([], [])
    data = _object(_object(body, "telemetry response").get("data"), "telemetry data")
    for site in _field(data, "sites", list, "telemetry data"):
        try:
            site_obj = _object(site, "telemetry site")
            site_id = _telemetry_id(site_obj, "site_id", "telemetry site")
            for meter in _field(site_obj, "meters", list, "telemetry site"):
                meter_obj = _object(meter, "meter")
                meter_id = _telemetry_id(meter_obj, "meter_id", "meter")
                for item in _field(meter_obj, "telemetry", list, "meter"):
                    _add_reading(batch, site_id, meter_id, item)
        except ValueError as error:
            batch.rejected.append(Rejected(RecordKind.TELEMETRY, None, str(error), site))
    return batch


def _add_reading(batch: TelemetryBatch, site_id: str, meter_id: str, item: Any) -> None:
    try:
        batch.readings.append(parse_reading(site_id, meter_id, item))
    except ValueError as error:
        payload = {"site_id": site_id, "meter_id": meter_id, "reading": item}
        batch.rejected.append(Rejected(RecordKind.TELEMETRY, site_id, str(error), payload))


def parse_sites(items: list[Any]) -> SiteBatch:
    sites: list[Site] = []
    rejected: list[Rejected] = []
    for item in items:
        try:
            sites.append(parse_site(item))
        except ValueError as error:
            rejected.append(_rejected(RecordKind.SITE, item, str(error)))
    return SiteBatch(sites, rejected)
