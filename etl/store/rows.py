"""Reading and writing rows in bulk, on both databases: ids a chunk at a time (SQLite bounds the
parameters of one statement), upserts that skip rows whose values are already stored, and many
rows written through the driver in one call."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Table, or_, select
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from etl.store.db import dialect_insert

__all__ = ["IN_CHUNK", "Row", "chunks", "select_in", "stored_rows", "upsert", "write_many"]

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
    write_many(conn, statement, rows)


def write_many(conn: Connection, statement: Insert, rows: list[Row]) -> None:
    """Execute an INSERT once per row, each row with the keys of the first: compiled once, each
    value passed through its column type's bind processor, then the driver's executemany.
    The same work as `conn.execute(statement, rows)`, minus what SQLAlchemy does per row
    (building each row's parameters anew, defaults, checks): at 40,000 rows of a first load
    that was twice the database's own time. Errors are SQLAlchemy's, as with `conn.execute`."""
    if not rows:
        return
    dialect = conn.dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(rows[0]))
    # columns left out of the rows whose default SQLAlchemy would fill in, e.g. an episode's 0
    defaults = {column.key: column.default for column in compiled.insert_prefetch}
    filled = {k: d.arg for k, d in defaults.items() if isinstance(d, ScalarElementColumnDefault)}
    if len(filled) != len(defaults):
        raise ValueError(f"write_many: a default that is not a value, in {sorted(defaults)}")
    names = list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)
    columns: list[list[Any]] = []
    for name in names:
        bind = compiled.binds[name]
        if bind.key in defaults:
            columns.append([filled[bind.key]] * len(rows))
            continue
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[bind.key] for row in rows]
        columns.append(values if processor is None else _processed(values, processor))
    if compiled.positional:
        parameters: list[Any] = list(zip(*columns, strict=True))
    else:
        parameters = [
            dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
        ]
    conn.exec_driver_sql(compiled.string, parameters)


def _processed(values: list[Any], processor: Callable[[Any], Any]) -> list[Any]:
    """Each value through the processor, which is called once for a run of the same object:
    the rows of one fetch share their `now` and their NULLs."""
    processed = []
    last: Any = _NOTHING
    result = None
    for value in values:
        if value is not last:
            last, result = value, processor(value)
        processed.append(result)
    return processed


_NOTHING = object()
