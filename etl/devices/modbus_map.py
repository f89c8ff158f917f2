"""The Modbus mapping file (TOML, docs/modbus.md): for each site, its device and what a curtail
and a restore write there; for each meter, its device and the registers its kW (and a battery's
kWh) are read from. Read and checked whole before anything is written or read: any fault is one
ConfigError line that names the file and the entry. Loads no Modbus library."""

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, NoReturn

from etl.base.errors import ConfigError
from etl.devices.mapping_file import read_toml

__all__ = [
    "DataType",
    "Device",
    "Mapping",
    "Meter",
    "Point",
    "Site",
    "Table",
    "Write",
    "load_mapping",
]

MOST_ID_CHARS = 200  # as etl's other ids: the store's and the readings' limit
MOST_WRITES = 32  # of one action: a handful in practice (a mode, a setpoint, an enable)
LARGEST_VALUE = Decimal(10) ** 12  # beyond any setpoint or meter: a typo or a hostile file
SCALES = (Decimal("0.000001"), Decimal("1000000"))  # the smallest and largest |scale|
# a DNS name's label: 1 to 63 letters, digits and hyphens, no hyphen first or last (RFC 1123)
LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HELP = "see docs/modbus.md"

WordOrder = Literal["big", "little"]


class Table(StrEnum):
    """Modbus's data tables that etl uses: written (holding, coil) or read (holding, input)."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"


class DataType(StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"

    @property
    def words(self) -> int:
        """How many 16-bit registers a value takes."""
        return 1 if self.endswith("16") else 2

    @property
    def bounds(self) -> tuple[int, int] | None:
        """The smallest and largest whole number it holds (None: a float)."""
        if self == DataType.FLOAT32:
            return None
        bits = 16 * self.words
        if self.startswith("u"):
            return 0, 2**bits - 1
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class Device:
    host: str
    port: int
    unit: int  # the unit (slave) id: which device behind a gateway, often 1 for a TCP device

    def __str__(self) -> str:
        return f"{self.host}:{self.port} unit {self.unit}"


@dataclass(frozen=True)
class Point:
    """Where a value lives: a coil, or 1 or 2 registers read as `type`, worth `scale` each."""

    table: Table
    address: int  # the protocol's, from 0 (a manual's register 40101 is often address 100)
    type: DataType = DataType.UINT16  # a coil's is its one bit: unused
    scale: Decimal = Decimal(1)  # the value is the register's number times this
    word_order: WordOrder = "big"  # of a 32-bit value: "big", its high word first

    def __str__(self) -> str:
        if self.table == Table.COIL:
            return f"coil {self.address}"
        last = self.address + self.type.words - 1
        span = f"s {self.address}-{last}" if last != self.address else f" {self.address}"
        return f"{self.table} register{span}"


@dataclass(frozen=True)
class Write:
    point: Point
    value: Decimal | bool  # as the mapping gives it
    raw: int | float | bool  # what the register holds: value / scale


@dataclass(frozen=True)
class Site:
    id: str
    device: Device
    curtail: tuple[Write, ...]
    restore: tuple[Write, ...]


@dataclass(frozen=True)
class Meter:
    id: str
    site_id: str
    device: Device
    kw: Point
    kwh: Point | None  # a battery's state of charge


@dataclass(frozen=True)
class Mapping:
    origin: str  # where it was read from, for messages: `ETL_MODBUS_MAP '/etc/etl/modbus.toml'`
    sites: dict[str, Site]
    meters: dict[str, Meter]


def load_mapping(path: str, setting: str) -> Mapping:
    """The mapping file at `path`, which `setting` names (for the messages), checked whole."""
    origin = f"{setting} {path[:200]!r}"
    if not path:
        raise ConfigError(f"{setting} is not set", f"the path of a Modbus mapping file; {HELP}")
    # decimals, not floats: 0.1 kW steps of a setpoint of 5.1 kW are 51, not 50.99999
    document = read_toml(path, origin, parse_float=Decimal)
    return _Reader(origin).mapping(document)


def _is_host(host: str) -> bool:
    """An IP address, or a DNS name that a connection can look up (one with an empty or too long
    label fails there with a UnicodeError, not as a host that cannot be reached)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host.removesuffix(".")  # a fully qualified name's root
    return len(name) <= 253 and all(LABEL.fullmatch(label) for label in name.split("."))


def _key(name: str) -> str:
    """A key as a path shows it: bare if it can be, else quoted (with its controls escaped)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name) else repr(name[:60])


class _Reader:
    """Reads the document's entries, each fault a ConfigError naming the file and the entry."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, why: str) -> NoReturn:
        raise ConfigError(f"{self.origin}: {where}: {why}", HELP)

    def table(self, value: object, where: str, keys: set[str], needed: set[str]) -> dict[str, Any]:
        """`value` as a table of these keys, with the needed ones: a typo (`scal = 0.1`) is a
        fault, not a default silently taken."""
        if not isinstance(value, dict):
            self.fail(where, "is not a table")
        unknown = sorted(set(value) - keys)
        if unknown:
            self.fail(
                f"{where}.{_key(unknown[0])}", f"unknown key (known: {', '.join(sorted(keys))})"
            )
        missing = sorted(needed - set(value))
        if missing:
            self.fail(where, f"lacks {missing[0]}")
        return value

    def mapping(self, document: dict[str, Any]) -> Mapping:
        self.table(document, "the file", {"sites", "meters"}, set())
        sites = self.entries(document.get("sites", {}), "sites")
        meters = self.entries(document.get("meters", {}), "meters")
        return Mapping(
            self.origin,
            {id: self.site(id, entry) for id, entry in sites.items()},
            {id: self.meter(id, entry) for id, entry in meters.items()},
        )

    def entries(self, value: object, where: str) -> dict[str, Any]:
        """A table of entries by id (TOML refuses an id given twice: a fault of the file)."""
        if not isinstance(value, dict):
            self.fail(where, "is not a table of entries by id")
        for id in value:
            self.id(id, f"{where}.{_key(id)}")
        return value

    def id(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, "an id is text")
        if not value or len(value) > MOST_ID_CHARS or value != value.strip():
            self.fail(where, f"an id is 1 to {MOST_ID_CHARS} characters, without spaces around")
        if not value.isprintable():
            self.fail(where, "an id has no control character")
        return value

    def device(self, entry: dict[str, Any], where: str) -> Device:
        host = entry["host"]
        if not isinstance(host, str) or not _is_host(host):
            self.fail(f"{where}.host", "is not a host name or an IP address")
        port = self.integer(entry.get("port", 502), f"{where}.port", 1, 65535)
        if type(entry["unit"]) is int and entry["unit"] == 0:
            # behind a TCP-to-serial gateway 0 is every device on the bus: a curtail there
            # would curtail the other sites too, and no device answers a read
            why = "0 is the broadcast address: behind a gateway it reaches every unit on the bus"
            self.fail(f"{where}.unit", f"{why} (give the device's own id, 1 to 247)")
        unit = self.integer(entry["unit"], f"{where}.unit", 1, 247)
        return Device(host, port, unit)

    def integer(self, value: object, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, "is not a whole number")
        if not low <= value <= high:
            shown = value if abs(value) <= LARGEST_VALUE else "a huge number"
            self.fail(where, f"{shown} is out of range ({low} to {high:,})")
        return value

    def number(self, value: object, where: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            self.fail(where, "is not a number")
        number = Decimal(value)
        if not number.is_finite():
            self.fail(where, "is not finite")
        if abs(number) > LARGEST_VALUE:
            self.fail(where, f"is beyond ±{LARGEST_VALUE:,}")
        return number

    def site(self, id: str, entry: object) -> Site:
        where = f"sites.{_key(id)}"
        keys = {"host", "port", "unit", "curtail", "restore"}
        fields = self.table(entry, where, keys, {"host", "unit", "curtail", "restore"})
        device = self.device(fields, where)
        curtail = self.writes(fields["curtail"], f"{where}.curtail")
        return Site(id, device, curtail, self.writes(fields["restore"], f"{where}.restore"))

    def writes(self, value: object, where: str) -> tuple[Write, ...]:
        if not isinstance(value, list) or not 1 <= len(value) <= MOST_WRITES:
            self.fail(where, f"is not a list of 1 to {MOST_WRITES} writes")
        return tuple(self.write(entry, f"{where}[{number}]") for number, entry in enumerate(value))

    def write(self, entry: object, where: str) -> Write:
        keys = {"table", "address", "type", "scale", "word_order", "value"}
        fields = self.table(entry, where, keys, {"address", "value"})
        point = self.point(fields, where, (Table.HOLDING, Table.COIL))
        if point.table == Table.COIL:
            if not isinstance(fields["value"], bool):
                self.fail(f"{where}.value", "a coil's value is true or false")
            return Write(point, fields["value"], fields["value"])
        value = self.number(fields["value"], f"{where}.value")
        return Write(point, value, self.raw(value, point, f"{where}.value"))

    def raw(self, value: Decimal, point: Point, where: str) -> int | float:
        """What the register holds for `value`: a whole number of `scale` steps, in range."""
        steps = value / point.scale
        bounds = point.type.bounds
        if bounds is None:
            return float(steps)
        if steps != steps.to_integral_value():
            self.fail(
                where, f"{value} is not a whole number of steps of {point.scale} ({point.type})"
            )
        low, high = bounds
        if not low <= steps <= high:
            why = f"out of range for {point.type} ({low:,} to {high:,})"
            self.fail(where, f"{value} is {int(steps)} steps of {point.scale}: {why}")
        return int(steps)

    def point(self, fields: dict[str, Any], where: str, tables: tuple[Table, ...]) -> Point:
        table = fields.get("table", str(Table.HOLDING))
        if table not in [str(t) for t in tables]:
            self.fail(f"{where}.table", f"is not one of {', '.join(tables)}")
        address = self.integer(fields["address"], f"{where}.address", 0, 65535)
        if Table(table) == Table.COIL:
            extra = sorted({"type", "scale", "word_order"} & set(fields))
            if extra:
                self.fail(
                    f"{where}.{extra[0]}", "a coil is one bit: it has no type, scale or word order"
                )
            return Point(Table.COIL, address)
        type_name = fields.get("type", str(DataType.UINT16))
        if type_name not in [str(t) for t in DataType]:
            self.fail(f"{where}.type", f"is not one of {', '.join(DataType)}")
        data_type = DataType(type_name)
        if address + data_type.words - 1 > 65535:
            self.fail(f"{where}.address", f"a {data_type} at {address} runs past register 65535")
        scale = self.number(fields.get("scale", 1), f"{where}.scale")
        if not SCALES[0] <= abs(scale) <= SCALES[1]:
            self.fail(f"{where}.scale", f"|scale| is from {SCALES[0]} to {SCALES[1]:,}")
        order = fields.get("word_order", "big")
        if order not in ("big", "little"):
            self.fail(f"{where}.word_order", "is big or little")
        if "word_order" in fields and data_type.words == 1:
            self.fail(f"{where}.word_order", f"a {data_type} is one register: it has no word order")
        return Point(Table(table), address, data_type, scale, order)

    def meter(self, id: str, entry: object) -> Meter:
        where = f"meters.{_key(id)}"
        keys = {"site", "host", "port", "unit", "kw", "kwh"}
        fields = self.table(entry, where, keys, {"site", "host", "unit", "kw"})
        site_id = self.id(fields["site"], f"{where}.site")
        device = self.device(fields, where)
        kw = self.reading(fields["kw"], f"{where}.kw")
        kwh = self.reading(fields["kwh"], f"{where}.kwh") if "kwh" in fields else None
        return Meter(id, site_id, device, kw, kwh)

    def reading(self, entry: object, where: str) -> Point:
        keys = {"table", "address", "type", "scale", "word_order"}
        fields = self.table(entry, where, keys, {"address"})
        return self.point(fields, where, (Table.HOLDING, Table.INPUT))
