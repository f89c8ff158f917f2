"""Settings checked as they are read: the API's URL and key, which APIs move no real site, and
the processor's settings within their bounds."""

import math

import pytest

from etl.base.config import (
    LONGEST_SETTING,
    ProcessorSettings,
    api_settings,
    is_loopback,
    is_practice_api,
)
from etl.base.errors import ConfigError


def test_key_defaults_to_the_public_one_only_for_the_sandbox() -> None:
    assert api_settings(None, None).key == "secret"
    assert api_settings("https://api.voltus.co", "k").key == "k"
    with pytest.raises(ConfigError, match="VOLTUS_API_KEY is not set"):
        api_settings("https://api.voltus.co", None)
    with pytest.raises(ConfigError, match="not an http"):
        api_settings("api.voltus.co", "k")
    assert "k3y" not in repr(api_settings("https://api.voltus.co", "k3y"))


def test_a_url_loses_its_trailing_slashes_and_a_key_that_is_not_ascii_is_refused() -> None:
    assert api_settings("https://api.voltus.co///", "k").url == "https://api.voltus.co"
    with pytest.raises(ConfigError, match="not ASCII") as raised:
        api_settings("https://api.voltus.co", "kéy")
    assert "kéy" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "practice"),
    [
        ("https://sandbox.voltus.co", True),
        ("https://SANDBOX.voltus.co/x", True),
        ("http://127.0.0.1:8787", True),
        ("http://127.3.2.1", True),  # all of 127/8 is this machine
        ("http://[::1]:80", True),
        ("http://localhost:8080", True),
        ("https://api.voltus.co", False),
        ("https://sandbox.voltus.co.example.com", False),
        ("https://example.com/sandbox.voltus.co", False),
        ("https://sandbox.voltus.co@example.com", False),  # the host is example.com
        ("http://10.0.0.5:8080", False),
        ("http://localhost.example.com", False),
        ("not a url", False),
    ],
)
def test_a_practice_api_is_the_public_sandbox_or_this_machine(url: str, practice: bool) -> None:
    assert is_practice_api(url) is practice


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("", False)],
)
def test_loopback_is_localhost_or_a_loopback_address(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_handler_timeout_must_be_shorter_than_the_claim_timeout() -> None:
    with pytest.raises(ConfigError, match="must be shorter than"):
        ProcessorSettings(claim_timeout=30, handler_timeout=60)


@pytest.mark.parametrize(
    "setting",
    [
        {"claim_timeout": math.nan},  # passed every check, then failed each claim
        {"claim_timeout": math.inf},
        {"retry_backoff": math.nan},
        {"retry_backoff": 0},
        {"handler_timeout": math.nan},
        {"lead_time": math.nan},
        {"lead_time": -1},
        {"lead_time": 1e12},
        {"workers": 0},
        {"workers": 10**6},
    ],
)
def test_settings_out_of_range_are_refused(setting: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="must be from"):
        ProcessorSettings(**setting)  # type: ignore[arg-type]


def test_the_bounds_themselves_are_settings() -> None:
    ProcessorSettings(
        claim_timeout=LONGEST_SETTING,
        retry_backoff=LONGEST_SETTING,
        handler_timeout=LONGEST_SETTING - 1,
        lead_time=LONGEST_SETTING,
        workers=1000,
    )
    ProcessorSettings(lead_time=0, workers=1, retry_backoff=0.001)
