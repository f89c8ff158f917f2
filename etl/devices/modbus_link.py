"""Talking to a Modbus TCP device through pymodbus: a connection whose requests all keep to one
deadline, a value written then read back, a value read. What fails is a DeviceError whose
message says where and why in one line."""

import logging
import math
import time
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from etl.base.logs import one_line
from etl.devices.modbus_map import Device, Point, Table, Write

__all__ = ["DeviceError", "Link", "OutOfTime", "Refused", "Silent", "Unreachable", "read", "write"]

# pymodbus logs each failure itself, on several lines (its last frames in hex), through the root
# logger, which prints them raw: etl says it once, in one line, in the record or its own log
logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)

# the exception codes of the Modbus application protocol (V1.1b3, section 7)
EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class DeviceError(Exception):
    """The device did not do what was asked."""


class Unreachable(DeviceError):
    """No connection to the host and port: none of its units can be asked now."""


class Silent(DeviceError):
    """The unit did not answer in time."""


class OutOfTime(DeviceError):
    """Etl's own time for the requests (an action's, a poll's) ran out before this one was
    sent: a fault of no device."""


class Refused(DeviceError):
    """The unit answered, but not what was asked: an exception response, another value."""


class Link:
    """One connection to a host and port (a device, or a gateway to several units). Every
    request waits at most `most` seconds, and none goes past `deadline` (time.monotonic)."""

    def __init__(self, host: str, port: int, deadline: float, most: float) -> None:
        self.endpoint, self.deadline, self.most = f"{host}:{port}", deadline, most
        self.client = ModbusTcpClient(host, port=port, timeout=most, retries=0)

    def __enter__(self) -> "Link":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.close()

    def ask(
        self, device: Device, point: Point, request: Callable[[ModbusTcpClient], ModbusPDU]
    ) -> ModbusPDU:
        """The answer to `request`, sent to `device` about `point`: not an exception response."""
        wait = min(self.most, self.deadline - time.monotonic())
        if wait <= 0:
            raise OutOfTime(f"{device}: {point} not asked: etl's time ran out before it")
        # pymodbus's timeout is the client's, set once: each request gets what the deadline leaves
        self.client.comm_params.timeout_connect = wait
        try:
            response = request(self.client)
        except ConnectionException:
            raise Unreachable(
                f"{self.endpoint}: no connection (refused, unreachable, or closed by the device)"
            ) from None
        except ModbusIOException:
            raise Silent(f"{device}: no answer within {wait:.3g} s") from None
        except ModbusException as error:  # an answer pymodbus could not make out
            raise Refused(f"{device}: {point}: {one_line(str(error))[:200]}") from None
        except Exception as error:
            # pymodbus lets out what its socket raises beyond OSError (a UnicodeError for a name
            # it cannot encode): one host's fault, which must not end the poll of the others
            why = f"{type(error).__name__}: {one_line(str(error))[:200]}"
            raise Unreachable(f"{self.endpoint}: no connection: {why}") from None
        if response.isError():
            code = response.exception_code
            name = EXCEPTIONS.get(code, "an unknown code")
            raise Refused(f"{device}: {point}: refused with exception {code} ({name})")
        return response


def write(link: Link, device: Device, change: Write) -> str:
    """Write the value, then read it back: says what it wrote, or raises a DeviceError."""
    point, unit = change.point, device.unit
    if point.table == Table.COIL:
        bit = bool(change.raw)
        link.ask(device, point, lambda c: c.write_coil(point.address, bit, device_id=unit))
        answer = link.ask(device, point, lambda c: c.read_coils(point.address, device_id=unit))
        bit_back = answer.bits[0] if answer.bits else None
        if bit_back is not bit:
            raise Refused(f"{device}: {point}: wrote {_on(bit)}, read back {_on(bit_back)}")
        return f"{point} = {_on(bit)}"
    words = _words(change.raw, point)
    if len(words) == 1:
        link.ask(device, point, lambda c: c.write_register(point.address, words[0], device_id=unit))
    else:
        link.ask(device, point, lambda c: c.write_registers(point.address, words, device_id=unit))
    back = _registers(link, device, point)
    if back != words:
        wrote = f"{change.value} (registers {words})"
        raise Refused(f"{device}: {point}: wrote {wrote}, read back {_shown(back, point)}")
    return f"{point} = {change.value}"


def read(link: Link, device: Device, point: Point) -> float:
    """The point's value (its registers times its scale), or a DeviceError."""
    registers = _registers(link, device, point)
    if len(registers) != point.type.words:
        raise Refused(f"{device}: {point}: answered {_shown(registers, point)}")
    value = _value(registers, point)
    if not math.isfinite(value):
        raise Refused(f"{device}: {point}: reads {value}, not a number")
    return value


def _registers(link: Link, device: Device, point: Point) -> list[int]:
    count, unit = point.type.words, device.unit
    if point.table == Table.INPUT:
        answer = link.ask(
            device,
            point,
            lambda c: c.read_input_registers(point.address, count=count, device_id=unit),
        )
    else:
        answer = link.ask(
            device,
            point,
            lambda c: c.read_holding_registers(point.address, count=count, device_id=unit),
        )
    return list(answer.registers)


def _words(raw: int | float | bool, point: Point) -> list[int]:
    data_type = ModbusTcpClient.DATATYPE[point.type.name]
    return ModbusTcpClient.convert_to_registers(raw, data_type, point.word_order)


def _value(registers: list[int], point: Point) -> float:
    data_type = ModbusTcpClient.DATATYPE[point.type.name]
    raw = ModbusTcpClient.convert_from_registers(registers, data_type, point.word_order)
    assert isinstance(raw, int | float), "one value of a numeric type"
    if isinstance(raw, float) and not math.isfinite(raw):
        return raw
    return float(Decimal(raw) * point.scale)  # 123 steps of 0.1 are 12.3, not 12.300000000000001


def _shown(registers: list[int], point: Point) -> str:
    if len(registers) != point.type.words:
        return f"{len(registers)} registers where {point.type.words} were asked"
    return f"{_value(registers, point):.10g} (registers {registers})"


def _on(bit: bool | None) -> str:
    return "nothing" if bit is None else "on" if bit else "off"
