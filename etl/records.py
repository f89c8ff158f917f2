"""Typed records of what the API sends, and their validation.

Nothing past the API client handles raw dicts: a response is turned into these records here, and a
record that does not validate is set aside whole with its reason (a `Rejected`), never half-used.
Unknown extra fields are tolerated; the dispatch's whole raw object is kept alongside.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etl.timeutil import parse_rfc3339


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
class Rejected:
    kind: str  # "dispatch" or "site"
    record_id: str | None
    reason: str
    payload: Any


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


def fingerprint(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def item_fingerprint(item: Any) -> str:
    """A fingerprint of one parsed record, to tell whether it changed since last time. Its repr
    is the cheapest stable text of it (a third of canonical JSON's cost); should the API ever
    reorder its fields, each record is then compared field by field once, and nothing spurious
    is recorded."""
    return fingerprint(repr(item).encode())


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


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {type(value).__name__}, not an object")
    return value


def _time(obj: dict[str, Any], name: str, where: str) -> datetime:
    try:
        return parse_rfc3339(obj[name])
    except ValueError as error:
        raise ValueError(f"{where}: '{name}': {error}") from None


def parse_program(value: Any) -> Program:
    obj = _object(value, "program")
    return Program(
        id=_field(obj, "id", int, "program"),
        name=_field(obj, "name", str, "program"),
        timezone=_field(obj, "timezone", str, "program"),
        market=_optional(obj, "market", str, "program") or "",
        program_type=_optional(obj, "program_type", str, "program") or "not_specified",
    )


def parse_dispatch_site(value: Any, index: int) -> DispatchSite:
    where = f"sites[{index}]"
    obj = _object(value, where)
    # `drop_by` is the deprecated alias of `commitment`: used only when commitment is absent
    amount_field = "commitment" if "commitment" in obj else "drop_by"
    amount = _optional(obj, amount_field, (int, float), where)
    return DispatchSite(
        id=_field(obj, "id", str, where),
        name=_optional(obj, "name", str, where) or "",
        customer_location_id=_optional(obj, "customer_location_id", str, where) or "",
        commitment_kw=None if amount is None else float(amount),
    )


def parse_dispatch(value: Any) -> Dispatch:
    obj = _object(value, "dispatch")
    dispatch_id = _field(obj, "id", str, "dispatch")
    if not dispatch_id:
        raise ValueError("dispatch: 'id' is empty")
    _field(obj, "start_time", str, "dispatch")
    sites = _field(obj, "sites", list, "dispatch")
    parsed_sites = tuple(parse_dispatch_site(site, i) for i, site in enumerate(sites))
    site_ids = [site.id for site in parsed_sites]
    if len(set(site_ids)) != len(site_ids):
        raise ValueError("dispatch: a site appears twice in 'sites'")
    return Dispatch(
        id=dispatch_id,
        authorized=_field(obj, "authorized", bool, "dispatch"),
        test=_field(obj, "test", bool, "dispatch"),
        start_time=_time(obj, "start_time", "dispatch"),
        end_time=None if obj.get("end_time") is None else _time(obj, "end_time", "dispatch"),
        creation_time=(
            None if obj.get("creation_time") is None else _time(obj, "creation_time", "dispatch")
        ),
        modification_number=_optional(obj, "modification_number", int, "dispatch"),
        metadata=_optional(obj, "metadata", dict, "dispatch"),
        program=parse_program(obj.get("program")),
        sites=parsed_sites,
        raw=obj,
    )


def parse_site(value: Any) -> Site:
    obj = _object(value, "site")
    meters = _optional(obj, "meters", list, "site") or []
    parsed_meters = []
    for i, meter in enumerate(meters):
        meter_obj = _object(meter, f"meters[{i}]")
        parsed_meters.append(
            Meter(
                id=_field(meter_obj, "id", str, f"meters[{i}]"),
                name=_optional(meter_obj, "name", str, f"meters[{i}]") or "",
                asset_type=_optional(meter_obj, "asset_type", str, f"meters[{i}]") or "",
            )
        )
    return Site(
        id=_field(obj, "id", str, "site"),
        name=_optional(obj, "name", str, "site") or "",
        customer_location_id=_optional(obj, "customer_location_id", str, "site") or "",
        meters=tuple(parsed_meters),
    )


def _record_id(value: Any) -> str | None:
    record_id = value.get("id") if isinstance(value, dict) else None
    return record_id if isinstance(record_id, str) else None


def parse_dispatches(items: list[Any]) -> DispatchBatch:
    dispatches: list[Dispatch] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for item in items:
        try:
            dispatch = parse_dispatch(item)
        except ValueError as error:
            rejected.append(Rejected("dispatch", _record_id(item), str(error), item))
            continue
        if dispatch.id in seen:
            rejected.append(Rejected("dispatch", dispatch.id, "dispatch: duplicate 'id'", item))
            continue
        seen.add(dispatch.id)
        dispatches.append(dispatch)
    return DispatchBatch(dispatches, rejected)


def parse_sites(items: list[Any]) -> SiteBatch:
    sites: list[Site] = []
    rejected: list[Rejected] = []
    for item in items:
        try:
            sites.append(parse_site(item))
        except ValueError as error:
            rejected.append(Rejected("site", _record_id(item), str(error), item))
    return SiteBatch(sites, rejected)
