"""The Modbus mapping file: the docs' worked example read as it says, and every hostile or
mistaken entry refused whole, in one line naming the file and the entry, before anything is
written to a device."""

import os
import re
from decimal import Decimal
from pathlib import Path

import pytest

from etl.base.errors import ConfigError
from etl.devices.modbus_map import DataType, Device, Mapping, Point, Table, load_mapping
from tests.docs import page

SETTING = "ETL_MODBUS_MAP"
SITE = """
[sites.s1]
host = "192.0.2.10"
unit = 1
curtail = [{ address = 100, value = 2 }]
restore = [{ address = 100, value = 0 }]
"""


def load(tmp_path: Path, text: str | bytes) -> Mapping:
    path = tmp_path / "modbus.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return load_mapping(str(path), SETTING)


def refused(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{SETTING} '{tmp_path}/modbus.toml'")
    return message


def with_write(**fields: str) -> str:
    """SITE with its curtail's write given these fields (as TOML text)."""
    entry = ", ".join(f"{name} = {value}" for name, value in fields.items())
    return SITE.replace("curtail = [{ address = 100, value = 2 }]", f"curtail = [{{ {entry} }}]")


def test_the_docs_worked_example_is_read_as_the_page_says(tmp_path: Path) -> None:
    (example,) = re.findall(r"```toml\n(.*?)```", page("modbus.md"), flags=re.DOTALL)
    mapping = load(tmp_path, example)
    battery = mapping.sites["xv1w4"]
    assert battery.device == Device("192.0.2.10", 502, 3)
    mode, setpoint = battery.curtail
    assert (mode.point, mode.raw) == (Point(Table.HOLDING, 100), 2)  # the manual's 40101
    assert setpoint.point == Point(Table.HOLDING, 101, DataType.INT32, Decimal("0.1"))
    assert setpoint.raw == 500  # 50 kW in 0.1 kW steps
    assert [(change.point.address, change.raw) for change in battery.restore] == [
        (101, 0),
        (100, 1),
    ]
    meter = mapping.meters["wpv31"]
    assert (meter.site_id, meter.device, str(meter.kw)) == (
        "xv1w4",
        Device("192.0.2.10", 502, 3),
        "input registers 300-301",
    )
    assert meter.kwh == Point(Table.INPUT, 302, DataType.UINT32, Decimal("0.01"))


@pytest.mark.parametrize(
    ("fields", "raw"),
    [
        ({"address": "1", "value": "5.1", "scale": "0.1"}, 51),  # decimals: not 50.99999
        ({"address": "1", "value": "-32768", "type": '"int16"'}, -32768),
        ({"address": "1", "value": "4294967295", "type": '"uint32"'}, 4294967295),
        ({"address": "1", "value": "-1.5", "type": '"float32"', "scale": "0.5"}, -3.0),
        ({"address": "65534", "value": "1", "type": '"int32"'}, 1),  # its last two registers
        ({"table": '"coil"', "address": "7", "value": "true"}, True),
    ],
)
def test_a_value_is_held_as_whole_steps_of_its_scale(
    tmp_path: Path, fields: dict[str, str], raw: float | bool
) -> None:
    (change,) = load(tmp_path, with_write(**fields)).sites["s1"].curtail
    assert change.raw == raw and type(change.raw) is type(raw)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"address": "1", "value": "70000"}, "value: 70000 is 70000 steps of 1: out of range "
         "for uint16 (0 to 65,535)"),
        ({"address": "1", "value": "-1"}, "out of range for uint16"),
        ({"address": "1", "value": "-40000", "type": '"int16"'}, "out of range for int16"),
        ({"address": "1", "value": "4294967296", "type": '"uint32"'}, "out of range for uint32"),
        ({"address": "1", "value": "5.05", "scale": "0.1"}, "5.05 is not a whole number of "
         "steps of 0.1 (uint16)"),
        ({"address": "1", "value": "nan"}, "value: is not finite"),
        ({"address": "1", "value": "-inf", "type": '"float32"'}, "value: is not finite"),
        ({"address": "1", "value": "1e400", "type": '"float32"'}, "value: is beyond ±"),
        ({"address": "1", "value": "10000000000000000"}, "value: is beyond ±1,000,000,000,000"),
        ({"address": "1", "value": "true"}, "value: is not a number"),
        ({"address": "1", "value": '"2"'}, "value: is not a number"),
        ({"address": "1", "value": "1", "scale": "0"}, "|scale| is from 0.000001 to 1,000,000"),
        ({"address": "1", "value": "1", "scale": "1e7"}, "|scale| is from"),
        ({"address": "1", "value": "1", "scale": "nan"}, "scale: is not finite"),
        ({"address": "1", "value": "1", "type": '"uint8"'}, "type: is not one of uint16, int16, "
         "uint32, int32, float32"),
        ({"address": "1", "value": "1", "type": '"float64"'}, "type: is not one of"),
        ({"address": "1", "value": "1", "type": "16"}, "type: is not one of"),
        ({"address": "1", "value": "1", "word_order": '"middle"', "type": '"int32"'},
         "word_order: is big or little"),
        ({"address": "1", "value": "1", "word_order": '"little"'}, "a uint16 is one register"),
        ({"address": "-1", "value": "1"}, "address: -1 is out of range (0 to 65,535)"),
        ({"address": "65536", "value": "1"}, "address: 65536 is out of range"),
        ({"address": "65535", "value": "1", "type": '"int32"'}, "runs past register 65535"),
        ({"address": "1.0", "value": "1"}, "address: is not a whole number"),
        ({"address": "1", "value": "1", "table": '"input"'}, "table: is not one of holding, coil"),
        ({"address": "1", "value": "1", "table": '"coil"'}, "a coil's value is true or false"),
        ({"address": "1", "value": "true", "table": '"coil"', "scale": "2"}, "a coil is one bit"),
        ({"address": "1", "value": "1", "scal": "0.1"}, "curtail[0].scal: unknown key"),
        ({"value": "1"}, "sites.s1.curtail[0]: lacks address"),
    ],
)  # fmt: skip
def test_a_write_that_is_not_what_it_seems_is_refused(
    tmp_path: Path, fields: dict[str, str], why: str
) -> None:
    message = refused(tmp_path, with_write(**fields))
    assert "sites.s1.curtail[0]." in message or "sites.s1.curtail[0]:" in message
    assert why in message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (('unit = 1', 'unit = 248'), "sites.s1.unit: 248 is out of range (1 to 247)"),
        (('unit = 1', 'unit = -1'), "sites.s1.unit: -1 is out of range"),
        (('unit = 1', 'unit = true'), "sites.s1.unit: is not a whole number"),
        (('unit = 1', ''), "sites.s1: lacks unit"),
        (('unit = 1', 'unit = 1\nport = 0'), "sites.s1.port: 0 is out of range (1 to 65,535)"),
        (('unit = 1', 'unit = 1\nport = 65536'), "sites.s1.port: 65536 is out of range"),
        (('unit = 1', 'unit = 1\nport = "502"'), "sites.s1.port: is not a whole number"),
        (('unit = 1', 'unit = 1\nport = 502.0'), "sites.s1.port: is not a whole number"),
        (('unit = 1', f'unit = 1\nport = {"9" * 30}'), "port: a huge number is out of range"),
        (('"192.0.2.10"', '"a b"'), "sites.s1.host: is not a host name or an IP address"),
        (('"192.0.2.10"', '""'), "sites.s1.host: is not a host name"),
        (('"192.0.2.10"', '"h\\u0007"'), "sites.s1.host: is not a host name"),
        (('"192.0.2.10"', f'"{"h" * 254}"'), "sites.s1.host: is not a host name"),
        (('"192.0.2.10"', "[1]"), "sites.s1.host: is not a host name"),
        (("[sites.s1]", "[sites.' s1']"), "sites.' s1': an id is 1 to 200 characters"),
        (("[sites.s1]", '[sites."s\\u0001"]'), "sites.'s\\x01': an id has no control character"),
        (("[sites.s1]", f"[sites.{'s' * 201}]"), "an id is 1 to 200 characters"),
        (("[sites.s1]", "[sites.s1]\ncolour = 1"), "sites.s1.colour: unknown key"),
        (("restore = [{ address = 100, value = 0 }]", ""), "sites.s1: lacks restore"),
        (("restore = [{ address = 100, value = 0 }]", "restore = []"),
         "sites.s1.restore: is not a list of 1 to 32 writes"),
        (("restore = [{ address = 100, value = 0 }]",
          f"restore = [{', '.join(['{ address = 1, value = 0 }'] * 33)}]"),
         "is not a list of 1 to 32 writes"),
        (("restore = [{ address = 100, value = 0 }]", "restore = { address = 1, value = 0 }"),
         "sites.s1.restore: is not a list"),
        (("restore = [{ address = 100, value = 0 }]", "restore = [1]"),
         "sites.s1.restore[0]: is not a table"),
        (("[sites.s1]", "colour = 1\n[sites.s1]"), "the file.colour: unknown key"),
    ],
)  # fmt: skip
def test_a_device_or_site_that_is_not_what_it_seems_is_refused(
    tmp_path: Path, change: tuple[str, str], why: str
) -> None:
    assert why in refused(tmp_path, SITE.replace(*change))


@pytest.mark.parametrize(
    "host",
    [
        "192.0.2.10",
        "2001:db8::1",
        "fe80::1%eth0",
        "localhost",
        "plc-1.site3.example",
        "PLC.example.",  # fully qualified
        f"{'a' * 63}.example",
        ".".join(["a" * 63] * 3 + ["b" * 61]),  # 253 characters
    ],
)
def test_a_host_name_or_ip_address_is_taken(tmp_path: Path, host: str) -> None:
    mapping = load(tmp_path, SITE.replace("192.0.2.10", host))
    assert mapping.sites["s1"].device.host == host


@pytest.mark.parametrize(
    "host",
    [
        "a..b",
        "-",
        "...",
        ".",
        ".example",
        "-plc.example",
        "plc-.example",
        "plc_1.example",
        "plc.example..",
        f"{'a' * 64}.example",  # a label is at most 63 characters
        ".".join(["a" * 63] * 3 + ["b" * 62]),  # 254 characters
        "192.0.2.10:502",
        "[::1]",
        "ho st",
    ],
)
def test_a_host_that_no_connection_could_take_is_refused(tmp_path: Path, host: str) -> None:
    message = refused(tmp_path, SITE.replace("192.0.2.10", host))
    assert "sites.s1.host: is not a host name or an IP address" in message


def test_unit_0_is_refused_as_the_broadcast_address(tmp_path: Path) -> None:
    """Behind a TCP-to-serial gateway, unit 0 is every device on the bus: a curtail there would
    curtail the other sites too."""
    message = refused(tmp_path, SITE.replace("unit = 1", "unit = 0"))
    assert "sites.s1.unit: 0 is the broadcast address" in message
    meter = '[meters.m]\nsite = "s"\nhost = "h"\nunit = 0\nkw = { address = 1 }'
    assert "meters.m.unit: 0 is the broadcast address" in refused(tmp_path, meter)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (SITE + SITE, "is not TOML: Cannot declare ('sites', 's1') twice"),  # a site twice
        ("[sites.s1]\n[sites.s1]", "is not TOML: Cannot declare"),
        ("sites = 3", "sites: is not a table of entries by id"),
        ("[sites\nx", "is not TOML: "),
        ("a = " + "9" * 5000, "is not TOML: Exceeds the limit"),
        ("a = " + "[" * 100_000, "is not TOML: nested too deep"),
        ('a = "\x00"', "is not TOML: Illegal character"),
        (b"\xff\xfe[sites]", "is not UTF-8 text"),
        ("#" * (1024 * 1024 + 1), "is over 1024 KiB"),
        (
            '[meters.m]\nsite = "s"\nhost = "h"\nunit = 1\nkw = { table = "coil", address = 1 }',
            "meters.m.kw.table: is not one of holding, input",
        ),
        (
            '[meters.m]\nsite = "s"\nhost = "h"\nunit = 1\nkw = { address = 1, value = 3 }',
            "meters.m.kw.value: unknown key",
        ),
        ('[meters.m]\nsite = "s"\nhost = "h"\nunit = 1', "meters.m: lacks kw"),
        (
            '[meters.m]\nsite = 5\nhost = "h"\nunit = 1\nkw = { address = 1 }',
            "meters.m.site: an id is text",
        ),
    ],
)
def test_a_file_that_is_no_mapping_is_refused(tmp_path: Path, text: str | bytes, why: str) -> None:
    assert why in refused(tmp_path, text)


def test_a_path_that_is_no_file_is_refused_without_waiting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ETL_MODBUS_MAP is not set"):
        load_mapping("", SETTING)
    with pytest.raises(ConfigError, match=r"cannot read .*: No such file or directory"):
        load_mapping(str(tmp_path / "missing.toml"), SETTING)
    with pytest.raises(ConfigError, match=r"cannot read .*: Is a directory"):
        load_mapping(str(tmp_path), SETTING)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a plain open would wait for ever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_mapping(str(fifo), SETTING)
