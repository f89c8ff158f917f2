"""The same-schema floor of a first load (issue 31, deciding issue 19's question): the raw driver
writing the very rows etl's first load wrote, into a fresh store of etl's own schema (the same
DDL, constraints, indexes and triggers, by etl's migrations), in one transaction, with each
database's fastest bulk path: sqlite3's `executemany`, psycopg's `COPY`. Like etl, it first
GETs and parses the listing (stdlib urllib and json, as benchmarks/floor.py does).

The rows are read back from a store etl loaded (every table it wrote: programs, sites,
dispatches, their sites, the fetch run and the events), as the driver returns them, with the JSON
columns as their text; the floor's clock runs over the fetch and the writes alone.
"""

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from benchmarks import floor
from benchmarks.databases import fresh_database
from etl.store.schema import metadata

# the tables a first load writes, parents first
TABLES = ["programs", "sites", "fetch_runs", "dispatches", "dispatch_sites", "events"]
Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]  # by table: its columns, its rows


def written_rows(url: str) -> Rows:
    """Every row of TABLES in the store at `url`, as its driver reads them."""
    found: Rows = {}
    with _driver(url) as conn:
        for table in TABLES:
            columns = [c.name for c in metadata.tables[table].columns]
            listed = ", ".join(
                f"{c}::text" if _is_json(table, c) and not url.startswith("sqlite") else c
                for c in columns
            )
            found[table] = (columns, list(conn.execute(f"SELECT {listed} FROM {table}")))
    return found


def floor_seconds(backend: str, api_url: str, rows: Rows) -> float:
    """Seconds to GET and parse the listing, then write `rows` into a fresh store, raw."""
    with fresh_database(backend) as engine:
        url = engine.url.render_as_string(hide_password=False)
        url = url.replace("postgresql+psycopg://", "postgresql://")
        started = time.perf_counter()
        floor.fetch(api_url, "secret")
        with _driver(url) as conn:
            if isinstance(conn, sqlite3.Connection):
                conn.execute("BEGIN IMMEDIATE")
                for table, (columns, values) in rows.items():
                    marks = ", ".join("?" * len(columns))
                    conn.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values
                    )
                conn.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cursor:
                    for table, (columns, values) in rows.items():
                        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                        with cursor.copy(statement) as copy:
                            for row in values:
                                copy.write_row(row)
        return time.perf_counter() - started


def _is_json(table: str, column: str) -> bool:
    return type(metadata.tables[table].c[column].type).__name__ == "JSONDocument"


@contextmanager
def _driver(url: str) -> Iterator[Any]:
    """The raw driver's connection to a store: sqlite3 (autocommit; WAL and foreign keys, as
    etl opens it), or psycopg."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            yield conn
        finally:
            conn.close()
        return
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        yield pg
