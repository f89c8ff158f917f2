"""Alembic environment. `etl db upgrade` and the tests pass a connection in; the plain `alembic`
command connects to ETL_DATABASE_URL (or etl's default SQLite file)."""

import os
from logging.config import fileConfig

from alembic import context

from etl.store.db import make_engine
from etl.store.schema import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name)


def run_migrations(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("etl migrations run online only: drop --sql")

passed_in = config.attributes.get("connection")
if passed_in is not None:
    run_migrations(passed_in)
else:
    with make_engine(os.environ.get("ETL_DATABASE_URL")).begin() as connection:
        run_migrations(connection)
