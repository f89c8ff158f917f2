"""Real store outages for tests: the store held locked by another connection (SQLite's write
lock, or on PostgreSQL an exclusive lock on the actions table), and PostgreSQL connections killed
by the server (`pg_terminate_backend`)."""

import hashlib
import sqlite3
import threading
import time
from typing import Any

import psycopg
from sqlalchemy.engine import make_url


def _victim_name(database_url: str) -> str:
    """The application_name of the connections that kill_connections ends: one per store, so
    that tests running at once (pytest -n) end only their own."""
    return "etl-victim-" + hashlib.md5(database_url.encode()).hexdigest()[:12]


def victim(database_url: str) -> str:
    """The URL, naming its PostgreSQL connections so that kill_connections finds them."""
    if not database_url.startswith("postgresql"):
        return database_url
    return f"{database_url}&application_name={_victim_name(database_url)}"


def _connect(database_url: str) -> Any:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None, "an outage needs a SQLite file, not an in-memory store"
        return sqlite3.connect(url.database, timeout=30, isolation_level=None)
    query = {k: v for k, v in url.query.items() if k != "application_name"}
    conninfo = url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True)


def hold_store(database_url: str, seconds: float) -> threading.Thread:
    """Hold the store for `seconds` from another connection; returns once it is held."""
    held = threading.Event()

    def hold() -> None:
        conn = _connect(database_url)
        try:
            if isinstance(conn, sqlite3.Connection):
                conn.execute("BEGIN IMMEDIATE")  # no other writer until it ends
            else:
                conn.execute("BEGIN")
                conn.execute("LOCK TABLE actions IN ACCESS EXCLUSIVE MODE")
            held.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30), "could not take the store's lock"
    return thread


def kill_connections(database_url: str) -> int:
    """End every connection of the URL made by `victim(...)`, as a server restart would."""
    with _connect(database_url) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [_victim_name(database_url)],
        ).fetchall()
    return len(rows)
