"""The package as an operator installs it: built without a warning, installed from its wheel in a
fresh environment, it migrates a SQLite store from any folder, needs nothing for PostgreSQL until
asked (the `postgresql` extra), and says so in one line."""

import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_the_built_wheel_installs_and_migrates_a_store_outside_the_repository(
    tmp_path: Path,
) -> None:
    def run(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        result = subprocess.run(
            [str(a) for a in args], cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env=environment,
        )  # fmt: skip
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    built = run(sys.executable, "-m", "build", "--outdir", tmp_path / "dist", REPO)
    said = (built.stdout + built.stderr).lower()
    assert "warning" not in said, [line for line in said.splitlines() if "warning" in line]
    (wheel,) = (tmp_path / "dist").glob("dispatch_etl-*.whl")
    run(sys.executable, "-m", "venv", tmp_path / "venv")
    bin_ = tmp_path / "venv" / "bin"
    run(bin_ / "pip", "install", "--quiet", wheel)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: psycopg")]
    assert requires and all('extra == "postgresql"' in line for line in requires)
    database = tmp_path / "elsewhere" / "etl.db"
    upgraded = run(bin_ / "etl", "db", "upgrade", "--database-url", f"sqlite:///{database}")
    assert "schema migrated from empty to" in upgraded.stdout
    with sqlite3.connect(database) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"dispatches", "events", "alembic_version"} <= tables
    postgres = run(
        bin_ / "etl", "db", "current", "--database-url", "postgresql://x@127.0.0.1/x", ok=False
    )
    assert postgres.returncode == 2 and "Traceback" not in postgres.stderr
    assert "pip install 'psycopg[binary]>=3.1'" in postgres.stderr
