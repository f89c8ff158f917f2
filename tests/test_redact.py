"""The one masking helper: credentials out of URLs, the rest as written."""

import pytest

from etl.config import api_settings
from etl.errors import ConfigError
from etl.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db?password=abc&sslmode=require",
         "postgresql://u:***@h:5432/db?password=***&sslmode=require"),
        ("https://user:s3cret@hooks.example.com/x?token=t0k&a=1",
         "https://user:***@hooks.example.com/x?token=***&a=1"),
        ("postgresql://u@h/db?options=-csearch_path%3Dx&PassWord=zz",
         "postgresql://u@h/db?options=-csearch_path%3Dx&PassWord=***"),
        ("postgresql://u:p%40ss@h:notaport/db", "postgresql://u:***@h:notaport/db"),
        ("sqlite:////var/lib/etl/etl.db", "sqlite:////var/lib/etl/etl.db"),
        ("http://[::1:bad/x", "***"),
    ],
)  # fmt: skip
def test_credentials_are_masked_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("key", ["abc\r", "abc\n", " abc", "a\x00c", "a b"])
def test_a_key_with_whitespace_or_control_characters_is_refused_without_echo(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        api_settings("https://api.voltus.co", key)
    assert "abc" not in str(raised.value) and "a b" not in str(raised.value)
