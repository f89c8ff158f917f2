"""The raw floor that etl's ingestion is measured against: the same work by hand.

GET the dispatches (stdlib urllib), parse them (stdlib json), and upsert programs, sites,
dispatches and their sites with `INSERT ... ON CONFLICT DO UPDATE ... WHERE (changed)`, through
sqlite3 (WAL) or psycopg `executemany`, in one transaction. No validation, no events, no history.

Run alone it is the floor of the whole-process (cron) figure, so it imports nothing else:
    python benchmarks/floor.py URL sqlite:///path.db
"""

import json
import sqlite3
import sys
import urllib.request
from typing import Any

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS programs (id INTEGER PRIMARY KEY, name TEXT, timezone TEXT,"
    " market TEXT, program_type TEXT)",
    "CREATE TABLE IF NOT EXISTS sites (id TEXT PRIMARY KEY, name TEXT, customer_location_id TEXT)",
    "CREATE TABLE IF NOT EXISTS dispatches (id TEXT PRIMARY KEY, program_id INTEGER,"
    " authorized BOOLEAN, test BOOLEAN, start_time TEXT, end_time TEXT, creation_time TEXT,"
    " modification_number INTEGER, metadata TEXT)",
    "CREATE TABLE IF NOT EXISTS dispatch_sites (dispatch_id TEXT, site_id TEXT,"
    " commitment DOUBLE PRECISION, PRIMARY KEY (dispatch_id, site_id))",
]

UPSERTS = {
    "programs": (
        "INSERT INTO programs VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
        " name = excluded.name, timezone = excluded.timezone, market = excluded.market,"
        " program_type = excluded.program_type WHERE (programs.name, programs.timezone,"
        " programs.market, programs.program_type) IS DISTINCT FROM (excluded.name,"
        " excluded.timezone, excluded.market, excluded.program_type)"
    ),
    "sites": (
        "INSERT INTO sites VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
        " name = excluded.name, customer_location_id = excluded.customer_location_id"
        " WHERE (sites.name, sites.customer_location_id) IS DISTINCT FROM"
        " (excluded.name, excluded.customer_location_id)"
    ),
    "dispatches": (
        "INSERT INTO dispatches VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id)"
        " DO UPDATE SET program_id = excluded.program_id, authorized = excluded.authorized,"
        " test = excluded.test, start_time = excluded.start_time, end_time = excluded.end_time,"
        " creation_time = excluded.creation_time,"
        " modification_number = excluded.modification_number, metadata = excluded.metadata"
        " WHERE (dispatches.program_id, dispatches.authorized, dispatches.test,"
        " dispatches.start_time, dispatches.end_time, dispatches.creation_time,"
        " dispatches.modification_number, dispatches.metadata) IS DISTINCT FROM"
        " (excluded.program_id, excluded.authorized, excluded.test, excluded.start_time,"
        " excluded.end_time, excluded.creation_time, excluded.modification_number,"
        " excluded.metadata)"
    ),
    "dispatch_sites": (
        "INSERT INTO dispatch_sites VALUES (%s, %s, %s) ON CONFLICT (dispatch_id, site_id)"
        " DO UPDATE SET commitment = excluded.commitment"
        " WHERE dispatch_sites.commitment IS DISTINCT FROM excluded.commitment"
    ),
}


def fetch(url: str, key: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/2022-04-15/dispatches",
        headers={"X-Voltus-API-Key": key, "Accept": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())["dispatches"]


def rows(dispatches: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    programs, sites, dispatch_rows, dispatch_sites = {}, {}, [], []
    for d in dispatches:
        p = d["program"]
        programs[p["id"]] = (p["id"], p["name"], p["timezone"], p["market"], p["program_type"])
        metadata = d.get("metadata")
        dispatch_rows.append(
            (
                d["id"],
                p["id"],
                d["authorized"],
                d["test"],
                d["start_time"],
                d.get("end_time"),
                d.get("creation_time"),
                d.get("modification_number"),
                None if metadata is None else json.dumps(metadata),
            )
        )
        for s in d["sites"]:
            sites[s["id"]] = (s["id"], s["name"], s["customer_location_id"])
            dispatch_sites.append((d["id"], s["id"], s.get("commitment")))
    return {
        "programs": list(programs.values()),
        "sites": list(sites.values()),
        "dispatches": dispatch_rows,
        "dispatch_sites": dispatch_sites,
    }


def load_sqlite(path: str, dispatches: list[dict[str, Any]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("BEGIN IMMEDIATE")
    for table, table_rows in rows(dispatches).items():
        conn.executemany(
            UPSERTS[table].replace("%s", "?").replace("IS DISTINCT FROM", "IS NOT"), table_rows
        )
    conn.execute("COMMIT")
    conn.close()


def load_postgresql(conninfo: str, dispatches: list[dict[str, Any]]) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        with conn.cursor() as cursor:
            for table, table_rows in rows(dispatches).items():
                cursor.executemany(UPSERTS[table], table_rows)


def load(database: str, dispatches: list[dict[str, Any]]) -> None:
    if database.startswith("sqlite:///"):
        load_sqlite(database.removeprefix("sqlite:///"), dispatches)
    else:
        load_postgresql(database, dispatches)


if __name__ == "__main__":
    load(sys.argv[2], fetch(sys.argv[1], "secret"))
