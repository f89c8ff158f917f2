"""The unit tier is pure: a test here that connects a socket (loopback too), listens, starts a
process or opens a database fails at once, saying so. Its place is tests/store or tests/system."""

import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine


def refused(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit test must not {what}: it belongs in tests/store")

    return refuse


@pytest.fixture(autouse=True)
def pure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", refused("connect a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", refused("connect a socket"))
    monkeypatch.setattr(socket.socket, "bind", refused("listen on a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refused("start a process"))
    monkeypatch.setattr(Engine, "raw_connection", refused("connect to a database"))
    monkeypatch.setattr(sqlite3, "connect", refused("open a SQLite database"))
    if "psycopg" in sys.modules:  # libpq connects without Python's sockets
        psycopg = sys.modules["psycopg"]
        monkeypatch.setattr(psycopg.Connection, "connect", refused("connect to PostgreSQL"))
