"""Secrets from files (NAME_FILE) and from systemd credentials ($CREDENTIALS_DIRECTORY)."""

import os
import threading
from pathlib import Path

import pytest

from etl.base.config import SECRETS, default_database_url, read_secret_files
from etl.base.errors import ConfigError


def test_a_file_with_a_trailing_line_break_gives_its_line(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("s3cret-key\n")
    (tmp_path / "url").write_bytes(b"postgresql://etl:pw@db/etl\r\n")
    environ = {
        "VOLTUS_API_KEY_FILE": str(tmp_path / "key"),
        "ETL_DATABASE_URL_FILE": str(tmp_path / "url"),
    }
    read_secret_files(environ)
    assert environ["VOLTUS_API_KEY"] == "s3cret-key"
    assert environ["ETL_DATABASE_URL"] == "postgresql://etl:pw@db/etl"


def test_systemd_credentials_are_read_by_their_lower_case_name(tmp_path: Path) -> None:
    (tmp_path / "voltus_api_key").write_text("from-systemd")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    read_secret_files(environ)
    assert environ["VOLTUS_API_KEY"] == "from-systemd"
    assert "ETL_CONSOLE_PASSWORD" not in environ  # no such credential


def test_every_secret_setting_may_come_from_a_file(tmp_path: Path) -> None:
    environ = {}
    for name in SECRETS:
        (tmp_path / name).write_text(f"value of {name}\n")
        environ[f"{name}_FILE"] = str(tmp_path / name)
    read_secret_files(environ)
    assert all(environ[name] == f"value of {name}" for name in SECRETS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "must hold its value on one line"),
        (b"\n", "must hold its value on one line"),
        (b"one-secret\nlines\n", "must hold its value on one line"),
        (b"a\rb", "must hold its value on one line"),
        (b"x" * (64 * 1024 + 1), "at most 64 KiB"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (None, "cannot read VOLTUS_API_KEY_FILE"),  # no such file
    ],
)
def test_a_bad_file_is_one_line_that_never_shows_its_content(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as refused:
        read_secret_files({"VOLTUS_API_KEY_FILE": str(path)})
    said = str(refused.value)
    assert "\n" not in said and "one-secret" not in said and "xxxxxxxx" not in said


def test_a_folder_and_both_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read VOLTUS_API_KEY_FILE"):
        read_secret_files({"VOLTUS_API_KEY_FILE": str(tmp_path)})
    (tmp_path / "key").write_text("k")
    both = {"VOLTUS_API_KEY": "a", "VOLTUS_API_KEY_FILE": str(tmp_path / "key")}
    with pytest.raises(
        ConfigError, match="VOLTUS_API_KEY and VOLTUS_API_KEY_FILE are set: keep one"
    ):
        read_secret_files(both)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_is_refused_without_waiting(tmp_path: Path, kind: str) -> None:
    """A FIFO with no writer would block the minutely job for ever; /dev/zero never ends."""
    if kind == "fifo":
        os.mkfifo(path := tmp_path / "key")
    else:
        path = Path("/dev/zero")
    said: list[str] = []

    def read() -> None:
        with pytest.raises(ConfigError) as refused:
            read_secret_files({"VOLTUS_API_KEY_FILE": str(path)})
        said.append(str(refused.value))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "still waiting for the file"
    assert said == [f"cannot read VOLTUS_API_KEY_FILE {str(path)!r}: not a regular file"]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["ETL_DATABASE_URL"], "ETL_DATABASE_URL and"),
        (["ETL_DATABASE_URL_FILE"], "ETL_DATABASE_URL_FILE and"),
        (
            ["ETL_DATABASE_URL", "ETL_DATABASE_URL_FILE"],
            "ETL_DATABASE_URL and ETL_DATABASE_URL_FILE and",
        ),
    ],
    ids=["variable", "file", "all three"],
)
def test_a_credential_and_another_choice_of_the_same_secret_are_refused(
    tmp_path: Path, given: list[str], said: str
) -> None:
    """Each is an operator's choice (no unit sets a secret): etl must not guess which counts, as
    taking the variable's would send machines meant to share a store each to one of its own."""
    (tmp_path / "etl_database_url").write_text("postgresql://etl:one-secret@db/etl\n")
    (tmp_path / "url").write_text("postgresql://etl:other-secret@db/etl\n")
    choices = {
        "ETL_DATABASE_URL": "sqlite:////var/lib/etl/etl.db",
        "ETL_DATABASE_URL_FILE": str(tmp_path / "url"),
    }
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)} | {name: choices[name] for name in given}
    with pytest.raises(ConfigError) as refused:
        read_secret_files(environ)
    assert str(refused.value) == f"{said} the systemd credential etl_database_url are set: keep one"


def test_the_default_store_is_in_the_units_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd names a unit's StateDirectory= in $STATE_DIRECTORY (several: joined by colons)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert default_database_url() == f"sqlite:///{tmp_path}/data/etl/etl.db"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    assert default_database_url() == f"sqlite:///{tmp_path}/state/etl.db"


def test_a_credentials_folder_that_cannot_be_looked_in_is_one_line() -> None:
    """stat() of a credential failed with a traceback where it could not look (a folder this
    user may not enter, or here a name too long for the system)."""
    environ = {"CREDENTIALS_DIRECTORY": "/run/" + "x" * 5000}
    with pytest.raises(ConfigError, match=r"^cannot read /run/x+: File name too long$"):
        read_secret_files(environ)
