"""The built wheel carries its migrations: install it, then `etl db upgrade` from elsewhere."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_installed_wheel_migrates_a_database_outside_the_repository(tmp_path: Path) -> None:
    def run(*args: str | Path) -> str:
        result = subprocess.run(
            [str(a) for a in args], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist", REPO)
    (wheel,) = (tmp_path / "dist").glob("etl-*.whl")
    run(sys.executable, "-m", "venv", tmp_path / "venv")
    run(tmp_path / "venv" / "bin" / "pip", "install", "--quiet", wheel)
    database = tmp_path / "elsewhere" / "etl.db"
    out = run(
        tmp_path / "venv" / "bin" / "etl",
        "db",
        "upgrade",
        "--database-url",
        f"sqlite:///{database}",
    )
    assert "schema migrated from empty to" in out
    with sqlite3.connect(database) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"dispatches", "events", "alembic_version"} <= tables
