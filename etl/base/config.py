"""Settings from environment variables (each also a CLI option) and their documented defaults."""

import ipaddress
import os
import stat
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from etl.base.errors import ConfigError
from etl.base.redact import redact_url

__all__ = [
    "OUTBOX_KEEP",
    "SANDBOX_HOST",
    "SANDBOX_KEY",
    "SANDBOX_URL",
    "ApiSettings",
    "ProcessorSettings",
    "api_settings",
    "default_database_url",
    "is_loopback",
    "is_practice_api",
    "read_regular_file",
    "read_secret_files",
]

SANDBOX_URL = "https://sandbox.voltus.co"
# how long the telemetry outbox keeps a reading once sent (ETL_OUTBOX_KEEP)
OUTBOX_KEEP = timedelta(days=35)
SANDBOX_HOST = "sandbox.voltus.co"
SANDBOX_KEY = "secret"  # Voltus's published key for its public sandbox, not a secret
# the settings that may hold a secret: each may also come from a file (NAME_FILE), or from a
# systemd credential named after it in lower case ($CREDENTIALS_DIRECTORY/voltus_api_key)
SECRETS = (
    "VOLTUS_API_KEY",
    "ETL_DATABASE_URL",
    "ETL_WEBHOOK_TOKEN",
    "ETL_CONSOLE_PASSWORD",
    "ETL_NOTIFY_URLS",
    "ETL_ACTION_WEBHOOK",
    "ETL_CALENDAR_TOKEN",
)
MOST_SECRET_BYTES = 64 * 1024


def is_practice_api(api_url: str) -> bool:
    """The public sandbox, or an emulator on a loopback address: an API whose dispatches move
    no real site."""
    host = urlsplit(api_url).hostname or ""
    return host == SANDBOX_HOST or is_loopback(host)


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_secret_files(environ: MutableMapping[str, str]) -> None:
    """Each secret setting not in the environment, read from the file NAME_FILE names, or from
    its systemd credential, into the environment: so that a key need not sit in a unit file or a
    crontab. The file holds the value on one line (a trailing line break is dropped). Any two of
    NAME, NAME_FILE and the credential are refused, as a choice etl would have to guess: each is
    the operator's (the shipped units set no secret setting)."""
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    for name in SECRETS:
        sources: dict[str, Path | None] = {}  # each place it is given, and the file to read
        if environ.get(name):
            sources[name] = None
        if (path := environ.get(f"{name}_FILE")) is not None:
            sources[f"{name}_FILE"] = Path(path)
        if credentials and _is_file(credential := Path(credentials) / name.lower()):
            sources[f"the systemd credential {name.lower()}"] = credential
        if len(sources) > 1:
            raise ConfigError(f"{' and '.join(sources)} are set: keep one")
        for source, file in sources.items():
            if file is not None:
                environ[name] = _secret(file, source)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as error:  # a credentials folder this user may not read
        raise ConfigError(f"cannot read {path.parent}: {error.strerror}") from None


def read_regular_file(path: str | Path, most: int, shown: str) -> bytes:
    """At most `most` + 1 bytes of the file (one more tells the caller it is longer), from a
    regular file only: a FIFO would block the job for ever (opened without waiting for a
    writer, then refused), a device such as /dev/zero would never end. `shown` names it in the
    one-line error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"cannot read {shown}: not a regular file")
            return file.read(most + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {shown}: {error.strerror}") from None


def _secret(path: Path, setting: str) -> str:
    shown = f"{setting} {str(path)[:200]!r}"
    data = read_regular_file(path, MOST_SECRET_BYTES, shown)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown} is not UTF-8 text") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if len(data) > MOST_SECRET_BYTES or not value or "\n" in value or "\r" in value:
        raise ConfigError(f"{shown} must hold its value on one line (at most 64 KiB)")
    return value


def default_database_url() -> str:
    """Under systemd, `$STATE_DIRECTORY/etl.db`: in the unit's StateDirectory= (the shipped
    units' /var/lib/etl), so that the units need not set ETL_DATABASE_URL, which the operator's
    ETL_DATABASE_URL_FILE or credential would then conflict with. Elsewhere
    `$XDG_DATA_HOME/etl/etl.db`, i.e. `~/.local/share/etl/etl.db` on most machines."""
    # systemd joins the paths of several StateDirectory= with colons
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return f"sqlite:///{Path(state) / 'etl.db'}"
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
            f"VOLTUS_API_URL is not an http(s) URL: {redact_url(url)!r}",
            f"for example {SANDBOX_URL} or https://api.voltus.co",
        )
    if key and any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError(
            "VOLTUS_API_KEY holds whitespace or a control character (a copy-paste accident?)",
            "set it to the key alone",
        )
    if key and not key.isascii():  # an HTTP header cannot carry it
        raise ConfigError(
            "VOLTUS_API_KEY holds a character that is not ASCII (a copy-paste accident?)",
            "set it to the key alone",
        )
    if not key:
        if parts.hostname != SANDBOX_HOST:
            raise ConfigError(
                f"VOLTUS_API_KEY is not set for {redact_url(url)}",
                "set VOLTUS_API_KEY or --api-key to the key Voltus issued you",
            )
        key = SANDBOX_KEY
    return ApiSettings(url=url, key=key)


LONGEST_SETTING = 7 * 86400  # seconds: a longer timeout, backoff or lead time is a typo


@dataclass(frozen=True)
class ProcessorSettings:
    """How the processor runs actions; each field is an ETL_* variable (docs/operations.md)."""

    claim_timeout: float = 300.0  # ETL_CLAIM_TIMEOUT_SECONDS
    retry_backoff: float = 30.0  # ETL_RETRY_BACKOFF_SECONDS: first retry after this, then doubling
    include_test: bool = False  # ETL_INCLUDE_TEST
    lead_time: float = 0.0  # ETL_LEAD_TIME_SECONDS: curtail this long before start_time
    workers: int = 32  # ETL_WORKERS: handler calls at once in one process
    handler_timeout: float = 60.0  # ETL_HANDLER_TIMEOUT_SECONDS: command and webhook handlers
    handler: str | None = None  # ETL_HANDLER: log, command, webhook or an entry point's name
    action_command: str | None = None  # ETL_ACTION_COMMAND
    action_webhook: str | None = None  # ETL_ACTION_WEBHOOK
    notify_urls: str | None = field(default=None, repr=False)  # ETL_NOTIFY_URLS: secrets
    notify_test: bool = False  # ETL_NOTIFY_TEST: tell of test dispatches created too

    def __post_init__(self) -> None:
        durations = (self.claim_timeout, self.retry_backoff, self.handler_timeout)
        # written so that nan fails each test: it compares false with everything
        if not all(0 < seconds <= LONGEST_SETTING for seconds in durations):
            raise ConfigError(
                "ETL_CLAIM_TIMEOUT_SECONDS, ETL_RETRY_BACKOFF_SECONDS and "
                f"ETL_HANDLER_TIMEOUT_SECONDS must be from 0 (excluded) to {LONGEST_SETTING:,}"
            )
        if not 0 <= self.lead_time <= LONGEST_SETTING or not 1 <= self.workers <= 1000:
            raise ConfigError(
                f"ETL_LEAD_TIME_SECONDS must be from 0 to {LONGEST_SETTING:,}, and ETL_WORKERS "
                "from 1 to 1000"
            )
        # a handler still running when its claim expires would be run again by another process
        if self.handler_timeout >= self.claim_timeout:
            raise ConfigError(
                f"ETL_HANDLER_TIMEOUT_SECONDS ({self.handler_timeout:g}) must be shorter than "
                f"ETL_CLAIM_TIMEOUT_SECONDS ({self.claim_timeout:g})"
            )
