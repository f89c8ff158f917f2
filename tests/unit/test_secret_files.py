"""Secrets from files (NAME_FILE) and from systemd credentials ($CREDENTIALS_DIRECTORY)."""

from pathlib import Path

import pytest

from etl.base.config import SECRETS, read_secret_files
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
    (tmp_path / "etl_webhook_token").write_text("t0ken-abcdefghijklmnop\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "ETL_WEBHOOK_TOKEN": "given"}
    read_secret_files(environ)
    assert environ["VOLTUS_API_KEY"] == "from-systemd"
    assert environ["ETL_WEBHOOK_TOKEN"] == "given"  # the environment's own value comes first
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
    with pytest.raises(ConfigError, match="both VOLTUS_API_KEY and VOLTUS_API_KEY_FILE are set"):
        read_secret_files(both)
