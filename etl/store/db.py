"""The database boundary: engines, transactions, schema checks, and driver errors made readable.

Nothing outside this module creates an engine or sees a driver exception.
"""

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import URL, make_url

from etl.base.config import default_database_url
from etl.base.errors import ConfigError, DatabaseError, SchemaError
from etl.base.redact import redact_url

__all__ = [
    "LOCK_TIMEOUT_SECONDS",
    "SCHEMA_REVISION",
    "RecordRefused",
    "check_schema",
    "describe",
    "dialect_insert",
    "make_engine",
    "open_store",
    "read_transaction",
    "record_savepoint",
    "stored_revision",
    "write_transaction",
]

# the Alembic head this code expects; tests/store/test_migrations.py keeps it equal to migrations/
SCHEMA_REVISION = "0029"
# how long a statement waits for a lock that another holds (SQLite's busy timeout, PostgreSQL's
# lock_timeout): long enough for any fetch or pass to commit, short enough that a minutely run
# against a stuck store ends well within its minute
LOCK_TIMEOUT_SECONDS = 10


def parse_url(database_url: str | None) -> URL:
    try:
        url = make_url(database_url or default_database_url())
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        raise ConfigError(
            "ETL_DATABASE_URL is not a database URL",
            "use sqlite:///path/to/etl.db or postgresql+psycopg://user@host/dbname",
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # the driver etl ships with
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {url.get_backend_name()!r}", "use SQLite or PostgreSQL"
        )
    return url


def dialect_insert(conn: Connection, table: Table) -> Any:
    """The dialect's own INSERT, which has ON CONFLICT; its module is imported only when used."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def describe(url: URL) -> str:
    """The URL with its passwords masked (user info and query), fit for messages and logs."""
    return redact_url(url.render_as_string(hide_password=False))


def make_engine(database_url: str | None, create: bool = True) -> Engine:
    """An engine for the URL. `create=False` is for commands that only use an existing store:
    a SQLite file that does not exist is then an error, not a new empty file."""
    url = parse_url(database_url)
    if url.get_backend_name() == "postgresql":
        logging.getLogger("psycopg").addFilter(_not_pipeline_teardown)
        try:
            engine = create_engine(url)
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("psycopg"):
                raise
            raise ConfigError(
                "PostgreSQL support is not installed (the psycopg package)",
                "install the postgresql extra, or: pip install 'psycopg[binary]>=3.1'",
            ) from None
        event.listen(engine, "connect", _postgresql_connect)
        return engine
    if url.database and url.database != ":memory:":
        path = Path(url.database).expanduser()
        if not create and not path.exists():
            raise SchemaError(
                f"database {describe(url)} does not exist", "run `etl db upgrade` to create it"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseError(
                f"database {describe(url)}: cannot create its folder: {error.strerror}"
            ) from None
    engine = create_engine(url, connect_args={"timeout": LOCK_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _not_pipeline_teardown(record: logging.LogRecord) -> bool:
    """Drops psycopg's "error ignored terminating <psycopg.Pipeline ...>: pipeline aborted".

    When the server refuses one row of a pipelined executemany (a record then set aside),
    psycopg raises that error, which etl reports, and, when the server answers late, logs the
    aborted pipeline's teardown as well: the same failure again, as a stray line on stderr."""
    return not str(record.msg).startswith("error ignored terminating")


def _postgresql_connect(dbapi_connection: Any, _record: Any) -> None:
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # session settings, outside any transaction
    # PostgreSQL waits for a lock for ever by default: a stuck holder would pile up cron runs.
    # In UTC, psycopg hands times over in Python's own UTC, which UTCDateTime keeps as they are:
    # in the server's zone, even 'Etc/UTC', each is converted, a second of a month's report.
    dbapi_connection.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'; SET TIME ZONE 'UTC'")
    dbapi_connection.autocommit = autocommit


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # etl emits BEGIN itself (below), so that a writer can take the lock up front
    dbapi_connection.isolation_level = None
    _use_wal(dbapi_connection)
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _use_wal(dbapi_connection: Any) -> None:
    """Write-ahead logging (kept by the file once set). The switch needs the file to itself, and
    SQLite answers "locked" at once, not after its busy timeout, when another process is using a
    new file meanwhile (two `etl db upgrade` at once): it is asked again within the timeout."""
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: two writers then queue (busy timeout) instead of
    # both reading and failing when the second tries to write
    mode = "IMMEDIATE" if conn.get_execution_options().get("etl_writer") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Driver errors become one readable DatabaseError naming the (masked) database."""
    try:
        yield
    except sqlalchemy.exc.StatementError as error:  # a driver's error, or a value it refused
        detail = _detail(error)
        raise DatabaseError(
            f"database {describe(engine.url)}: {detail}", _hint(detail), refused=_refused(detail)
        ) from None


def _detail(error: sqlalchemy.exc.StatementError) -> str:
    lines = str(error.orig).strip().splitlines() if error.orig else []
    return lines[0] if lines else type(error.orig or error).__name__


def _refused(detail: str) -> bool:
    """Whether the database refused what was written, rather than being locked, unreachable
    or without its schema."""
    return _hint(detail) is None


class RecordRefused(Exception):
    """The database refused one record's writes (see `record_savepoint`)."""


@contextmanager
def record_savepoint(conn: Connection) -> Iterator[None]:
    """One record's writes in a savepoint: if the database refuses them, they are undone and
    RecordRefused says why, and the transaction goes on without them."""
    savepoint = conn.begin_nested()
    try:
        yield
    except sqlalchemy.exc.StatementError as error:
        detail = _detail(error)
        if not _refused(detail):  # locked or unreachable: not the record's fault, nor final
            raise
        savepoint.rollback()
        raise RecordRefused(detail) from None
    savepoint.commit()


def _hint(detail: str) -> str | None:
    if "locked" in detail or "lock timeout" in detail:
        return "another process held the database too long; the next run will try again"
    if "connect" in detail or "unable to open" in detail:
        return "is the database server running and the URL right?"
    if "no such table" in detail or "does not exist" in detail:
        return "run `etl db upgrade`"
    return None


@contextmanager
def write_transaction(
    engine: Engine, lock_name: str | None = None, sqlite_foreign_keys: bool = True
) -> Iterator[Connection]:
    """A transaction that writes. On SQLite it takes the database's write lock at BEGIN
    (IMMEDIATE). On PostgreSQL, a `lock_name` makes concurrent holders of the same name take
    turns (an advisory lock): for work that must not interleave, like two overlapping fetches.
    `sqlite_foreign_keys=False` is for migrations, which copy tables that others refer to (SQLite
    can switch enforcement only outside a transaction)."""
    with database_errors(engine), engine.execution_options(etl_writer=True).connect() as conn:
        enforcement = conn.dialect.name == "sqlite" and not sqlite_foreign_keys
        sqlite3 = conn.connection.driver_connection
        if enforcement and sqlite3 is not None:
            sqlite3.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                if lock_name and conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": lock_name}
                    )
                yield conn
        finally:
            if enforcement and sqlite3 is not None:
                sqlite3.execute("PRAGMA foreign_keys = ON")


@contextmanager
def read_transaction(engine: Engine, one_snapshot: bool = False) -> Iterator[Connection]:
    """A transaction that reads. `one_snapshot`: all its statements see the same moment, for
    figures that must add up (REPEATABLE READ on PostgreSQL, where each statement otherwise sees
    its own; a SQLite read transaction always does)."""
    with database_errors(engine), engine.connect() as conn:
        if one_snapshot and conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def stored_revision(conn: Connection) -> str | None:
    """The store's schema revision, as Alembic records it (without importing Alembic, which costs
    the minutely job its time); None in a store that has its table but no revision yet."""
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def check_schema(engine: Engine) -> None:
    """Fail in one line, saying how to fix it, unless the schema is at this code's revision."""
    with read_transaction(engine) as conn:
        tables = sqlalchemy.inspect(conn).get_table_names()
        if "alembic_version" not in tables:
            raise SchemaError(
                f"database {describe(engine.url)} has no etl schema", "run `etl db upgrade` first"
            )
        revision = stored_revision(conn)
    # revisions are numbered 0001, 0002...: a greater one was made by a newer etl
    if revision is not None and revision > SCHEMA_REVISION:
        raise SchemaError(
            f"database {describe(engine.url)} is at schema revision {revision}, newer than this "
            f"etl's {SCHEMA_REVISION}",
            "upgrade etl to the version that migrated it",
        )
    if revision != SCHEMA_REVISION:
        raise SchemaError(
            f"database {describe(engine.url)} is at schema revision {revision}; "
            f"this etl needs {SCHEMA_REVISION}",
            "run `etl db upgrade`",
        )


def open_store(database_url: str | None) -> Engine:
    """The engine of an existing store at this code's schema revision; never creates one (only
    `etl db upgrade` does)."""
    engine = make_engine(database_url, create=False)
    check_schema(engine)
    return engine
