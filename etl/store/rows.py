"""Reading and writing rows in bulk, on both databases: ids a chunk at a time (SQLite bounds the
parameters of one statement), and upserts that skip rows whose values are already stored."""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Table, or_, select

from etl.store.db import dialect_insert

__all__ = ["IN_CHUNK", "Row", "chunks", "select_in", "stored_rows", "upsert"]

IN_CHUNK = 500  # ids per `IN (...)`: well under SQLite's bound-parameter limit

Row = dict[str, Any]


def chunks(keys: Iterable[Any]) -> Iterator[list[Any]]:
    """The keys, IN_CHUNK at a time: one `IN (...)` each, under SQLite's parameter limit."""
    keys = list(keys)
    for start in range(0, len(keys), IN_CHUNK):
        yield keys[start : start + IN_CHUNK]


def select_in(
    conn: Connection, columns: Sequence[Column[Any]], keys: Iterable[Any]
) -> Iterator[Any]:
    """Rows whose first column is in `keys`, a chunk of keys per query."""
    for chunk in chunks(keys):
        yield from conn.execute(select(*columns).where(columns[0].in_(chunk)))


def stored_rows(
    conn: Connection, table: Table, keys: Iterable[Any], columns: Sequence[str]
) -> dict[Any, Row]:
    """The stored rows of these ids, with these columns and when each was first seen."""
    selected = [table.c.id, *(table.c[c] for c in columns), table.c.first_seen_at]
    return {row.id: row._asdict() for row in select_in(conn, selected, keys)}


def upsert(conn: Connection, table: Table, rows: list[Row], key: list[str]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE, skipping the update when nothing differs."""
    if not rows:
        return
    statement = dialect_insert(conn, table)
    updated = [c for c in rows[0] if c not in key and c != "first_seen_at"]
    compared = [c for c in updated if c != "updated_at"]
    statement = statement.on_conflict_do_update(
        index_elements=key,
        set_={c: statement.excluded[c] for c in updated},
        where=or_(*(table.c[c].is_distinct_from(statement.excluded[c]) for c in compared)),
    )
    conn.execute(statement, rows)
