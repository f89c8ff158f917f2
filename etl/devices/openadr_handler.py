"""The `openadr` handler (an `etl.handlers` entry point): it hands each action to the OpenADR VTN
that `etl openadr serve` runs in this process (etl.devices.openadr_vtn). Loads no OpenADR
library: the minutely `etl run` never imports this, and this never imports the VTN."""

from etl.base.errors import ConfigError
from etl.handlers import Handler

__all__ = ["install"]

_running: Handler | None = None  # the VTN's, once `etl openadr serve` has started it


def install(vtn: Handler | None) -> None:
    """Make `vtn` the handler that the entry point gives from now on (None: no longer any)."""
    global _running
    _running = vtn


def __getattr__(name: str) -> Handler:
    # the entry point is looked up when the handler is loaded, before any action: outside
    # `etl openadr serve` (`etl run --handler openadr`) that is a one-line error at start, not
    # every action failing with no VTN to send it
    if name != "handler":
        raise AttributeError(name)
    if _running is None:
        raise ConfigError("the openadr handler runs inside `etl openadr serve` only")
    return _running
