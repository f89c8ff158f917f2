"""Settings from environment variables (each also a CLI option) and their documented defaults."""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from etl.errors import ConfigError

SANDBOX_URL = "https://sandbox.voltus.co"
SANDBOX_HOST = "sandbox.voltus.co"
SANDBOX_KEY = "secret"  # Voltus's published key for its public sandbox, not a secret


def default_database_url() -> str:
    """`$XDG_DATA_HOME/etl/etl.db`, i.e. `~/.local/share/etl/etl.db` on most machines."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(data_home) / 'etl' / 'etl.db'}"


@dataclass(frozen=True)
class ApiSettings:
    url: str
    key: str

    def __repr__(self) -> str:  # keeps the key out of logs and tracebacks
        return f"ApiSettings(url={self.url!r}, key='***')"


def api_settings(url: str | None, key: str | None) -> ApiSettings:
    url = (url or SANDBOX_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"VOLTUS_API_URL is not an http(s) URL: {url!r}",
            f"for example {SANDBOX_URL} or https://api.voltus.co",
        )
    if not key:
        if parts.hostname != SANDBOX_HOST:
            raise ConfigError(
                f"VOLTUS_API_KEY is not set for {url}",
                "set VOLTUS_API_KEY or --api-key to the key Voltus issued you",
            )
        key = SANDBOX_KEY
    return ApiSettings(url=url, key=key)
