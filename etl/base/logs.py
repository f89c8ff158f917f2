"""Diagnostics on stderr through the standard library's `logging`: one line per record, starting
with an ISO 8601 UTC timestamp and a level, or with ETL_LOG_FORMAT=json one JSON object per line.
When stderr is systemd's journal (JOURNAL_STREAM names it), a text line starts with its syslog
priority instead of the timestamp (`<3>ERROR ...`; a JSON line after it, `<3>{...}`): the
journal reads the priority, so that `journalctl -p err` finds etl's errors.

Data (reports, audit, status, the log handler's lines) goes to stdout, never through here.
"""

import json
import logging
import os
import sys
from datetime import UTC, datetime

__all__ = [
    "JournalFormatter",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "counted",
    "log",
    "one_line",
    "percent_of",
    "set_verbosity",
    "shorten",
]

log = logging.getLogger("etl")

# what a record may carry besides its message (`extra={...}`): JSON lines give them as fields
FIELDS = (
    "dispatch",
    "site",
    "action",
    "idempotency_key",
    "attempt",
    "method",
    "path",
    "status",
    "duration_ms",
    "fetch_run",
    "event",
)

FORMATS = ("text", "json")

# a message quoting what a remote party sent cannot forge a second log line
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(32), 127]}


def one_line(text: str) -> str:
    """The text with its control characters escaped (a line break as `\\x0a`): what an API
    or a handler sent, fit for a line that a person or a monitoring check reads."""
    return text.translate(_CONTROLS)


def counted(n: int, one: str, many: str | None = None) -> str:
    """`1 site`, `5,000 sites`: for people, in messages and pages."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def percent_of(value: float) -> str:
    """`23%`, `-12%`, and `0%` for what rounds to nothing from below (not `-0%`)."""
    shown = f"{value:.0f}"
    return f"{'0' if shown == '-0' else shown}%"


def shorten(text: str, limit: int) -> str:
    """The text, or as many of its first words as fit in `limit` characters with an ellipsis:
    never a word cut in two (unless its first word alone is longer)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    words = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return words.rstrip(" ,;:(") + "…"


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-11-27T06:49:42.123Z INFO fetch 12: ...`"""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_timestamp(record)} {record.levelname} {self.line(record)}"

    def line(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:  # a bug's traceback, on the same line
            message += "\n" + self.formatException(record.exc_info)
        return one_line(message)


# syslog's priorities (sd-daemon(3)), by logging's level
PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JournalFormatter(TextFormatter):
    """`<6>INFO fetch 12: ...`: for stderr connected to the journal."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_priority(record)}>{record.levelname} {self.line(record)}"


def _priority(record: logging.LogRecord) -> int:
    return PRIORITIES.get(record.levelname, 6)


def stderr_is_journal() -> bool:
    """Whether stderr is the stream systemd connected to the journal: JOURNAL_STREAM holds its
    device and inode (a child whose stderr was redirected inherits the variable, not the
    stream)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a file (a test's capture)
        return False
    return stream == f"{info.st_dev}:{info.st_ino}"


class JsonFormatter(logging.Formatter):
    """`{"time": "2026-11-27T06:49:42.123Z", "level": "info", "message": "...", ...}`; for the
    journal, after the syslog priority (`<6>{...}`), which the journal takes off the line."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        fields = {name: getattr(record, name, None) for name in FIELDS}
        entry.update({name: value for name, value in fields.items() if value is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return f"<{_priority(record)}>{line}" if self.journal else line


def configure(log_format: str) -> None:
    """Send etl's records to stderr (as it is now: tests swap it) at INFO, in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    text = JournalFormatter() if journal else TextFormatter()
    handler.setFormatter(JsonFormatter(journal) if log_format == "json" else text)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    if log_format not in FORMATS:  # a typo in a crontab must not cost the lines themselves
        log.warning("ETL_LOG_FORMAT=%r is not one of %s: writing text", log_format, FORMATS)


def set_verbosity(verbose: bool, quiet: bool) -> None:
    """-v: also each HTTP attempt, claim and handler call; -q: only warnings and errors."""
    if verbose:
        log.setLevel(logging.DEBUG)
    elif quiet:
        log.setLevel(logging.WARNING)
