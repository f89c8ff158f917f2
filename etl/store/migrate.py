"""Schema migrations through Alembic. Only `etl db upgrade` (and tests) import this module:
Alembic takes a third of a second to import, which a minutely cron job should not pay."""

import io
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from etl.base.errors import ConfigError, DatabaseError, SchemaError
from etl.store.db import describe, read_transaction, write_transaction

__all__ = [
    "check_downgrade",
    "current_revision",
    "head_revision",
    "known_revisions",
    "migrate",
    "upgrade_sql",
]


def _config(output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(files("etl.migrations")))
    return config


def current_revision(engine: Engine) -> str | None:
    with read_transaction(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(
    engine: Engine, revision: str = "head", downgrade: bool = False
) -> tuple[str | None, str | None]:
    """Upgrade (or downgrade) in one transaction; concurrent runs take turns on a lock, and the
    later one finds nothing left to do. The revisions found and left, read under the lock (so
    that the later of two runs at once says what it found, not what the first one did)."""
    config = _config()
    with write_transaction(engine, "etl.migrate", sqlite_foreign_keys=False) as conn:
        config.attributes["connection"] = conn
        known = known_revisions()
        current = MigrationContext.configure(conn).get_current_revision()
        if current is not None and current not in known:
            raise SchemaError(
                f"database {describe(engine.url)} is at schema revision {current}, which this etl "
                "does not know: it is older than the database",
                "upgrade etl to the version that migrated it, or use another database",
            )
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)
        if conn.dialect.name == "sqlite":  # what enforcement would have caught: roll it back
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise DatabaseError(f"the migration would break {len(broken)} foreign keys")
        return current, MigrationContext.configure(conn).get_current_revision()


def upgrade_sql(engine: Engine) -> str:
    """The SQL that `migrate` would run on this PostgreSQL store, from its revision to this
    etl's, for a DBA who applies migrations by hand; nothing is changed."""
    if engine.dialect.name != "postgresql":
        raise ConfigError(
            "--sql writes PostgreSQL's statements: a SQLite store is migrated by etl db upgrade"
        )
    current, head = current_revision(engine), head_revision()
    if current is not None and current not in known_revisions():
        raise SchemaError(f"database {describe(engine.url)} is at an unknown revision {current}")
    if current == head:
        return f"-- {describe(engine.url)}: schema already at revision {head}\n"
    output = io.StringIO()
    command.upgrade(_config(output), f"{current}:head" if current else "head", sql=True)
    return output.getvalue()


def check_downgrade(current: str | None, revision: str) -> None:
    """A downgrade goes to a known revision before the current one."""
    order = [s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()][::-1]
    if revision not in order:
        raise ConfigError(f"no revision {revision[:40]!r}", f"one of {order[0]} to {order[-1]}")
    if current is None or current not in order or order.index(revision) >= order.index(current):
        raise ConfigError(f"the schema is at revision {current}: {revision} is not before it")


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "migrations/versions has no revision"
    return head
