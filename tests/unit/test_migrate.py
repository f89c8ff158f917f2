"""The revisions as this etl ships them, read without a database: one line of them, from 0001 to
the revision the code expects, and the downgrades `etl db downgrade` accepts. (Applying them:
tests/store/test_migrations.py.)"""

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from etl.base.errors import ConfigError
from etl.store.db import SCHEMA_REVISION
from etl.store.migrate import check_downgrade, head_revision, known_revisions

VERSIONS = Path(__file__).parents[2] / "migrations" / "versions"


def test_the_code_expects_the_newest_revision() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_the_revisions_are_one_line_numbered_as_their_files() -> None:
    config = Config()
    config.set_main_option("script_location", str(VERSIONS.parent))
    scripts = list(ScriptDirectory.from_config(config).walk_revisions())[::-1]  # oldest first
    numbers = sorted(path.name[:4] for path in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert [script.revision for script in scripts] == numbers
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]
    assert [script.down_revision for script in scripts] == [None, *numbers[:-1]]
    assert known_revisions() == set(numbers)


def test_a_downgrade_goes_to_a_known_revision_before_the_current_one() -> None:
    check_downgrade(SCHEMA_REVISION, "0001")
    check_downgrade("0002", "0001")
    with pytest.raises(ConfigError, match="no revision '9999'") as unknown:
        check_downgrade(SCHEMA_REVISION, "9999")
    assert f"one of 0001 to {SCHEMA_REVISION}" in str(unknown.value)
    for current, revision in [("0001", "0001"), ("0001", "0002"), (None, "0001"), ("zz", "0001")]:
        with pytest.raises(ConfigError, match="is not before it"):
            check_downgrade(current, revision)
