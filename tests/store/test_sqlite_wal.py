"""Two processes opening a new SQLite store at once (two `etl db upgrade`, a cron run beside a
first upgrade): switching the file to write-ahead logging needs it to itself, and SQLite may
answer "locked" at once rather than after its busy timeout. etl asks again; before, one such
pair in ten failed with exit 4."""

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from etl.store.db import make_engine


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_connections_racing_on_a_new_file_all_get_wal(tmp_path: Path, database_url: str) -> None:
    failures: list[Exception] = []

    def open_store(url: str, ready: threading.Barrier) -> None:
        engine = make_engine(url)
        ready.wait()
        try:
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        except Exception as error:  # each failure is the finding
            failures.append(error)
        finally:
            engine.dispose()

    for round_ in range(40):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        ready = threading.Barrier(3)
        racers = [threading.Thread(target=open_store, args=(url, ready)) for _ in range(3)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
    assert failures == []
