"""Reading and writing rows in bulk, on both databases: ids a chunk at a time (SQLite bounds the
parameters of one statement), upserts that skip rows whose values are already stored, and many
rows written through the driver in one call: executemany on SQLite (its own loop, in C), and on
PostgreSQL one statement over `unnest` arrays, a parameter per column, where executemany costs a
round of Python work per row (a 5,000-site dispatch writes 60,000 rows on its way to being
curtailed; a first load of 10,000 dispatches, 60,000). Each goes through SQLAlchemy, whose
errors etl.store.db turns into its own."""

import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    Connection,
    CursorResult,
    Float,
    String,
    Table,
    any_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from etl.store.db import dialect_insert

__all__ = [
    "IN_CHUNK",
    "Row",
    "chunks",
    "insert_new_rows",
    "insert_rows",
    "select_in",
    "stored_rows",
    "update_rows",
    "upsert",
    "write_many",
]

IN_CHUNK = 500  # ids per `IN (...)`: well under SQLite's bound-parameter limit

Row = dict[str, Any]


def chunks(keys: Iterable[Any], size: int | None = None) -> Iterator[list[Any]]:
    """The keys, `size` at a time; by default IN_CHUNK, one `IN (...)` each, under SQLite's
    parameter limit."""
    keys = list(keys)
    size = size or IN_CHUNK  # read now: a test may lower it
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def select_in(
    conn: Connection, columns: Sequence[Column[Any]], keys: Iterable[Any]
) -> Iterator[Any]:
    """Rows whose first column is in `keys`: on PostgreSQL all the keys in one array parameter
    (`= ANY`), on SQLite a chunk of keys per `IN (...)`. A list of 500 parameters cost
    SQLAlchemy and psycopg more to render and parse than the database to answer."""
    keys = list(keys)
    if keys and conn.dialect.name == "postgresql":
        kind = columns[0].type
        # not cast to VARCHAR(32)[]: that would cut a longer key to one that a stored row has
        kind = String() if isinstance(kind, String) else kind
        array = bindparam("keys", keys, type_=ARRAY(kind))
        yield from conn.execute(select(*columns).where(columns[0] == any_(array)))
        return
    for chunk in chunks(keys):
        yield from conn.execute(select(*columns).where(columns[0].in_(chunk)))


def stored_rows(
    conn: Connection, table: Table, keys: Iterable[Any], columns: Sequence[str]
) -> dict[Any, Row]:
    """The stored rows of these ids, with these columns and when each was first seen."""
    selected = [table.c.id, *(table.c[c] for c in columns), table.c.first_seen_at]
    return {row.id: row._asdict() for row in select_in(conn, selected, keys)}


def upsert(
    conn: Connection, table: Table, rows: list[Row], key: list[str], stored: Container[Any]
) -> None:
    """Write the rows: those whose key `stored` lacks are inserted (a first load's, in bulk),
    the others INSERT ... ON CONFLICT DO UPDATE, skipping the update when nothing differs.
    `stored` holds the keys (a value, or a tuple of a compound key's) of the stored rows the
    caller read in this transaction, which no other writer of the table shares."""
    if not rows:
        return
    new: list[Row] = []
    old: list[Row] = []
    for row in rows:
        found = row[key[0]] if len(key) == 1 else tuple(row[k] for k in key)
        (old if found in stored else new).append(row)
    insert_rows(conn, table, new)
    if not old:
        return
    statement = dialect_insert(conn, table)
    updated = [c for c in old[0] if c not in key and c != "first_seen_at"]
    compared = [c for c in updated if c != "updated_at"]
    statement = statement.on_conflict_do_update(
        index_elements=key,
        set_={c: statement.excluded[c] for c in updated},
        where=or_(*(table.c[c].is_distinct_from(statement.excluded[c]) for c in compared)),
    )
    write_many(conn, statement, old)


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


def insert_rows(conn: Connection, table: Table, rows: list[Row]) -> None:
    """Insert the rows, each with the keys of the first."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        write_many(conn, insert(table), rows)
        return
    names = list(rows[0])
    _execute(
        conn,
        f"{_insert_into(conn, table, names)} SELECT * FROM {_unnest(conn, table, names)}",
        table,
        names,
        rows,
    )


def insert_new_rows(
    conn: Connection, table: Table, rows: list[Row], conflict: list[str], returning: str
) -> list[Any]:
    """Insert the rows whose `conflict` columns no stored row has (ON CONFLICT DO NOTHING),
    and return the `returning` column of those inserted."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        statement = (
            dialect_insert(conn, table)
            .on_conflict_do_nothing(index_elements=conflict)
            .returning(table.c[returning])
        )
        return list(conn.execute(statement, rows).scalars())
    names = list(rows[0])
    quote = conn.dialect.identifier_preparer
    sql = (
        f"{_insert_into(conn, table, names)} SELECT * FROM {_unnest(conn, table, names)} "
        f"ON CONFLICT ({', '.join(map(quote.quote, conflict))}) DO NOTHING "
        f"RETURNING {quote.quote(returning)}"
    )
    return list(_execute(conn, sql, table, names, rows).scalars())


def update_rows(conn: Connection, table: Table, rows: list[Row], key: list[str]) -> None:
    """Set each row's other columns on the stored row its `key` columns name."""
    if not rows:
        return
    names = list(rows[0])
    changed = [name for name in names if name not in key]
    if conn.dialect.name != "postgresql":
        # bound under other names: SQLAlchemy keeps a column's own name for its SET clause
        conn.execute(
            update(table)
            .where(*(table.c[k] == bindparam(f"key_{k}") for k in key))
            .values({name: bindparam(f"new_{name}") for name in changed}),
            [{(f"key_{k}" if k in key else f"new_{k}"): v for k, v in row.items()} for row in rows],
        )
        return
    quote = conn.dialect.identifier_preparer
    sql = (
        f"UPDATE {quote.format_table(table)} AS t SET "
        + ", ".join(f"{quote.quote(n)} = v.{quote.quote(n)}" for n in changed)
        + f" FROM {_unnest(conn, table, names)} AS v ({', '.join(map(quote.quote, names))})"
        + " WHERE "
        + " AND ".join(f"t.{quote.quote(k)} = v.{quote.quote(k)}" for k in key)
    )
    _execute(conn, sql, table, names, rows)


def _insert_into(conn: Connection, table: Table, names: list[str]) -> str:
    quote = conn.dialect.identifier_preparer
    return f"INSERT INTO {quote.format_table(table)} ({', '.join(map(quote.quote, names))})"


def _execute(
    conn: Connection, sql: str, table: Table, names: list[str], rows: list[Row]
) -> CursorResult[Any]:
    """The statement with one array of the rows' bound values per named column (a tuple: one
    execution, not one per row)."""
    return conn.exec_driver_sql(sql, tuple(_bound(conn, table, names, rows)))


def _unnest(conn: Connection, table: Table, names: list[str]) -> str:
    """`unnest(%b::type[], ...)`: one array parameter per column (sent in binary), in the
    columns' types less their length: a cast to VARCHAR(10) would cut a longer value, which the
    column itself refuses."""
    dialect = conn.dialect
    types = [LENGTH.sub("", table.c[name].type.compile(dialect=dialect)) for name in names]
    return f"unnest({', '.join(f'%b::{t}[]' for t in types)})"


LENGTH = re.compile(r"\(\d+\)")


def _bound(conn: Connection, table: Table, names: list[str], rows: list[Row]) -> list[list[Any]]:
    """Each named column's values, as its type binds them for this connection's database."""
    dialect = conn.dialect
    values = []
    for name in names:
        processor = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        column = [row[name] for row in rows]
        if isinstance(table.c[name].type, Float):  # an array is of one type: 5 and 5.5 are not
            column = [value if value is None else float(value) for value in column]
        values.append(column if processor is None else _processed(column, processor))
    return values


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
