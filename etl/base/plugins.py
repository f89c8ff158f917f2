"""Plug-ins: objects that other installed packages offer under an entry point group
(`etl.handlers`, `etl.telemetry_sources`), loaded by name only when asked for."""

from importlib.metadata import entry_points
from typing import Any

from etl.base.errors import ConfigError

__all__ = ["load_entry_point"]


def load_entry_point(group: str, name: str, kind: str, builtins: str) -> Any:
    """The object the installed entry point `name` of `group` names. `kind` says what it is in
    the errors (`handler`), `builtins` what may be chosen besides plug-ins (`log, command`)."""
    found = entry_points(group=group, name=name) if name else ()
    if not found:
        raise ConfigError(
            f"no {kind} named {name[:60]!r}",
            f"use {builtins} or an installed `{group}` entry point",
        )
    try:
        return next(iter(found)).load()
    except Exception as error:  # a plug-in's import can fail in any way
        raise ConfigError(f"{kind} {name[:60]!r} could not be loaded: {error}") from None
