"""The `modbus` handler (an `etl.handlers` entry point: ETL_HANDLER=modbus): a curtail or a
restore writes, in order, what the mapping file (ETL_MODBUS_MAP, docs/modbus.md) gives its site,
each value read back. Loaded only when chosen: another handler's run imports no pymodbus."""

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from etl.base.config import ProcessorSettings
from etl.base.errors import ConfigError
from etl.devices.modbus_link import DeviceError, Link, OutOfTime, write
from etl.devices.modbus_map import Device, Mapping, load_mapping
from etl.handlers import ActionKind, ActionRequest, HandlerFailed

__all__ = ["MAP_SETTING", "ModbusHandler"]

MAP_SETTING = "ETL_MODBUS_MAP"


class ModbusHandler:
    """Each action within the handler timeout (ETL_HANDLER_TIMEOUT_SECONDS), connection and
    every write and read-back included. It does not retry: a failed attempt is etl's to retry,
    and writing the same values again is harmless."""

    def __init__(self, mapping: Mapping, timeout: float) -> None:
        self.mapping, self.timeout = mapping, timeout
        self._turns: dict[tuple[str, int], threading.Lock] = {}
        self._turns_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ProcessorSettings) -> "ModbusHandler":
        """The handler of the mapping file ETL_MODBUS_MAP names, checked whole before any
        action: any fault in it is a ConfigError."""
        mapping = load_mapping(os.environ.get(MAP_SETTING, ""), MAP_SETTING)
        if not mapping.sites:
            raise ConfigError(f"{mapping.origin} maps no site", "see docs/modbus.md")
        return cls(mapping, settings.handler_timeout)

    def __call__(self, request: ActionRequest) -> str:
        site = self.mapping.sites.get(request.site_id)
        if site is None:
            raise HandlerFailed(f"site {request.site_id!r} is not in {self.mapping.origin}")
        changes = site.curtail if request.action == ActionKind.CURTAIL else site.restore
        deadline = time.monotonic() + self.timeout
        done: list[str] = []
        try:
            with (
                self._turn(site.device, deadline),
                Link(site.device.host, site.device.port, deadline, self.timeout) as link,
            ):
                for change in changes:
                    done.append(write(link, site.device, change))
        except DeviceError as error:
            before = f" (written before it, and read back: {', '.join(done)})" if done else ""
            raise HandlerFailed(f"{request.action} of site {site.id}: {error}{before}") from None
        return f"{request.action} of site {site.id} at {site.device}: {', '.join(done)}; read back"

    @contextlib.contextmanager
    def _turn(self, device: Device, deadline: float) -> Iterator[None]:
        """The host and port to this action alone: a gateway takes few connections at once (1
        to 4 is common), so the actions of the sites behind it take turns, each in its time."""
        with self._turns_lock:
            turn = self._turns.setdefault((device.host, device.port), threading.Lock())
        if not turn.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise OutOfTime(f"{device}: out of time waiting for the other actions on its host")
        try:
            yield
        finally:
            turn.release()
