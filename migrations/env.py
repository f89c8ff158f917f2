"""Alembic environment. `etl db upgrade` and the tests pass a connection in; the plain `alembic`
command connects to ETL_DATABASE_URL (or etl's default SQLite file)."""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from etl.store.db import make_engine
from etl.store.schema import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name)


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """`etl db upgrade --sql`: the statements, for a DBA to apply by hand (PostgreSQL's only:
    SQLite changes a table by copying it, which needs the table read)."""
    context.configure(dialect_name="postgresql", target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


passed_in = config.attributes.get("connection")
if context.is_offline_mode():
    run_offline()
elif passed_in is not None:
    run_migrations(passed_in)
else:
    with make_engine(os.environ.get("ETL_DATABASE_URL")).begin() as connection:
        run_migrations(connection)
