"""The built-in handlers' decisions before any process or request: which handler a
configuration chooses, what it refuses, how a commitment is written, what the log handler says,
and which of etl's variables a command never sees. (Running them: tests/store/test_handlers.py.)"""

from dataclasses import replace
from pathlib import Path

import pytest

from etl.act.builtin_handlers import (
    CommandHandler,
    LogHandler,
    WebhookHandler,
    _without_secrets,
    format_kw,
    load_handler,
)
from etl.base.config import SANDBOX_URL, SECRETS, ProcessorSettings
from etl.base.errors import ConfigError
from etl.handlers import ActionKind
from tests.helpers import REQUEST


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ProcessorSettings(handler="nope"), "no handler named 'nope'"),
        (ProcessorSettings(action_command="c", action_webhook="http://x"), "both"),
        (ProcessorSettings(action_command="/no/such/program"), "cannot find the program"),
        (ProcessorSettings(handler="webhook"), "needs ETL_ACTION_WEBHOOK"),
    ],
)
def test_handler_configuration_errors(settings: ProcessorSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_handler(settings, SANDBOX_URL)


@pytest.mark.parametrize(
    "api_url",
    ["https://sandbox.voltus.co", "http://127.0.0.1:8787", "http://[::1]:80", "http://localhost"],
)
def test_the_log_handler_is_the_default_against_practice_apis(api_url: str) -> None:
    assert isinstance(load_handler(ProcessorSettings(), api_url), LogHandler)


@pytest.mark.parametrize("api_url", ["https://api.voltus.co", "http://10.0.0.5:8080"])
def test_against_a_real_api_a_handler_must_be_chosen(api_url: str) -> None:
    with pytest.raises(ConfigError, match="no handler is chosen") as raised:
        load_handler(ProcessorSettings(), api_url)
    assert "ETL_HANDLER=log" in str(raised.value)
    assert isinstance(load_handler(ProcessorSettings(handler="log"), api_url), LogHandler)


def test_a_webhook_configured_alone_is_the_handler_and_its_url_is_kept_out_of_messages() -> None:
    settings = ProcessorSettings(action_webhook="https://u:pw-s3cret@hooks.example/etl")
    handler = load_handler(settings, "https://api.voltus.co")
    assert isinstance(handler, WebhookHandler) and handler.timeout == settings.handler_timeout
    assert "s3cret" not in handler.shown_url
    with pytest.raises(ConfigError, match="not an http") as raised:
        load_handler(ProcessorSettings(action_webhook="ftp://u:pw-s3cret@h/x"), SANDBOX_URL)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("command", "message"),
    [("'unclosed", "cannot be split like a shell would"), ("", "cannot find the program ''")],
)
def test_a_command_that_names_no_program_is_refused(command: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CommandHandler(command, timeout=5)


def test_a_handler_file_without_its_run_bit_is_reported_as_such(tmp_path: Path) -> None:
    script = tmp_path / "handler.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(ConfigError) as raised:
        CommandHandler(f"{script} --site", timeout=5)
    assert f"{str(script)!r} is not executable" in str(raised.value)
    assert f"chmod +x {script}" in str(raised.value)


@pytest.mark.parametrize(
    ("kw", "written"),
    [
        (12.0, "12"),
        (0.0, "0"),
        (-3.0, "-3"),
        (12.5, "12.5"),
        (0.1, "0.1"),
        (None, ""),
        (1e6, "1000000"),
    ],
)
def test_a_commitment_is_written_without_a_needless_fraction(
    kw: float | None, written: str
) -> None:
    assert format_kw(kw) == written


def test_a_command_gets_none_of_etls_secret_settings_nor_their_files() -> None:
    environ = {name: "s" for name in SECRETS} | {f"{name}_FILE": "/f" for name in SECRETS}
    environ |= {"PATH": "/bin", "SITE_CONTROLLER": "relay-7", "CREDENTIALS_DIRECTORY": "/run/c"}
    assert _without_secrets(environ) == {
        "PATH": "/bin",
        "SITE_CONTROLLER": "relay-7",
        "CREDENTIALS_DIRECTORY": "/run/c",
    }


def test_the_log_handler_announces_each_dispatch_once_per_action(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = LogHandler()
    first = log(REQUEST)
    second = log(replace(REQUEST, site_id="s2", customer_location_id="2", commitment_kw=None))
    restore = log(replace(REQUEST, action=ActionKind.RESTORE, test=True))
    assert (
        first
        == "Dispatch d1 is in progress\n- Customer location 1 should curtail. Commitment: 12 kW"
    )
    assert second == "- Customer location 2 should curtail. Commitment: unknown kW"
    assert restore == "Dispatch d1 has ended (test dispatch)\n- Customer location 1 should restore."
    assert capsys.readouterr().out == "\n".join([first, second, restore]) + "\n"
