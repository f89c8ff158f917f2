"""A fresh, migrated database for one measurement: a SQLite file, or a PostgreSQL schema."""

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import Engine

from etl.store.db import make_engine
from etl.store.migrate import migrate

POSTGRES = os.environ.get("ETL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_database(backend: str) -> Iterator[Engine]:
    with scratch_url(backend) as url:
        engine = make_engine(url)
        migrate(engine)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def scratch_url(backend: str) -> Iterator[str]:
    """An empty database for the time of the block: a SQLite file in a temporary folder, or a
    PostgreSQL schema of its own (a `postgresql://` URL, which etl and psycopg both take)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
