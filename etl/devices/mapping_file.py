"""Reading a device mapping file (TOML: the Modbus and OpenADR bridges'): a regular file of
bounded size, UTF-8, parsed with every fault a hostile file can cause as one ConfigError line."""

import tomllib
from collections.abc import Callable
from typing import Any

from etl.base.config import read_regular_file
from etl.base.errors import ConfigError
from etl.base.logs import one_line

__all__ = ["MOST_BYTES", "read_toml"]

MOST_BYTES = 1024 * 1024  # a mapping of thousands of sites is a few hundred kB


def read_toml(path: str, origin: str, parse_float: Callable[[str], Any] = float) -> dict[str, Any]:
    """The TOML document in the file at `path`; `origin` names it in the messages."""
    return _parse(_read(path, origin), origin, parse_float)


def _read(path: str, origin: str) -> str:
    """The file's text: bounded, UTF-8."""
    data = read_regular_file(path, MOST_BYTES, origin)
    if len(data) > MOST_BYTES:
        raise ConfigError(f"{origin} is over {MOST_BYTES // 1024} KiB: not a mapping file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{origin} is not UTF-8 text") from None


def _parse(text: str, origin: str, parse_float: Callable[[str], Any]) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=parse_float)
    except RecursionError:
        raise ConfigError(f"{origin} is not TOML: nested too deep") from None
    except ValueError as error:  # TOMLDecodeError, or an integer of thousands of digits
        raise ConfigError(f"{origin} is not TOML: {one_line(str(error))[:200]}") from None
