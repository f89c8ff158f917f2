"""rows.write_many stores exactly what `conn.execute(insert, rows)` stores, on both databases; the
bulk writes keep each column's own checks."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Double, Engine, Integer, MetaData, String, Table, insert, select

from etl.base.errors import DatabaseError
from etl.store.db import database_errors
from etl.store.rows import IN_CHUNK, Row, insert_rows, select_in, update_rows, write_many
from etl.store.schema import JSONDocument, UTCDateTime

ROWS: list[Row] = [
    {"name": "a", "at": datetime(2026, 12, 6, 3, 4, 5, 6, tzinfo=UTC), "doc": {"x": [1, 2.5]}},
    {"name": "b", "at": None, "doc": {"nested": {"y": None}, "text": "é\u2028"}},
]


def scratch_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String),
        Column("at", UTCDateTime),
        Column("doc", JSONDocument),
        Column("episode", Integer, default=7),  # filled in when the rows leave it out
    )


def test_write_many_stores_what_execute_stores(engine: Engine) -> None:
    by_execute, by_write_many = scratch_table("by_execute"), scratch_table("by_write_many")
    with engine.begin() as conn:
        by_execute.create(conn)
        by_write_many.create(conn)
        conn.execute(insert(by_execute), ROWS)
        write_many(conn, insert(by_write_many), ROWS)
        expected = conn.execute(select(by_execute).order_by(by_execute.c.id)).all()
        written = conn.execute(select(by_write_many).order_by(by_write_many.c.id)).all()
    assert written == expected
    assert [row.episode for row in written] == [7, 7]
    assert written[0].at == ROWS[0]["at"] and written[1].doc == ROWS[1]["doc"]


def test_a_default_that_is_not_a_value_is_refused(engine: Engine) -> None:
    table = Table(
        "computed_default",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String),
        Column("stamp", String, default=lambda: "now"),
    )
    with engine.begin() as conn:
        table.create(conn)
        with pytest.raises(ValueError, match="a default that is not a value"):
            write_many(conn, insert(table), [{"name": "a"}])


def test_the_bulk_writes_keep_each_columns_checks_and_take_mixed_numbers(engine: Engine) -> None:
    """On PostgreSQL each column's values go as one array, cast to the column's type: a cast to
    VARCHAR(3) cut 'abcdef' to 'abc' where an INSERT refuses it, and an array mixing 5 and 5.5
    was refused."""
    table = Table(
        "bulk_checked",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("code", String(3)),
        Column("kw", Double),
    )
    with engine.begin() as conn:
        table.create(conn)
        insert_rows(
            conn, table, [{"id": 1, "code": "abc", "kw": 5}, {"id": 2, "code": "x", "kw": 5.5}]
        )
        update_rows(conn, table, [{"id": 1, "kw": 7}, {"id": 2, "kw": 7.25}], ["id"])
        assert conn.execute(select(table.c.kw).order_by(table.c.id)).scalars().all() == [7, 7.25]
    if engine.dialect.name == "postgresql":  # SQLite keeps any text in any column
        too_long = pytest.raises(DatabaseError, match="too long")
        with too_long, database_errors(engine), engine.begin() as conn:
            insert_rows(conn, table, [{"id": 3, "code": "abcdef", "kw": None}])
        with too_long, database_errors(engine), engine.begin() as conn:
            update_rows(conn, table, [{"id": 1, "code": "abcdef"}], ["id"])


def test_select_in_finds_exactly_the_rows_of_the_keys_however_many(engine: Engine) -> None:
    """On PostgreSQL the keys go as one array: cast to the column's VARCHAR(3), 'abcdef' was
    cut to 'abc' and found the row of another key."""
    table = Table("selected", MetaData(), Column("code", String(3), primary_key=True))
    stored = [f"{i:03}" for i in range(IN_CHUNK + 1)]
    with engine.begin() as conn:
        table.create(conn)
        insert_rows(conn, table, [{"code": code} for code in [*stored, "abc"]])
        wanted = [*stored[::2], stored[-1], "abcdef", "zz", "abc\u00e9"]
        found = [row.code for row in select_in(conn, [table.c.code], wanted)]
    assert sorted(found) == sorted(set(stored[::2]) | {stored[-1]})
