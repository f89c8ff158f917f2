"""The errors a user can cause or meet, each with a reason and what to do about it.

The CLI turns any EtlError into one line on stderr and its exit code; anything else is a bug.
"""

from enum import IntEnum

__all__ = ["ApiError", "ConfigError", "DatabaseError", "EtlError", "ExitCode", "SchemaError"]


class ExitCode(IntEnum):
    """Every command's exit code (docs/operations.md lists them; `etl status` has its own)."""

    OK = 0
    FAILED = 1  # any other failure
    CONFIG = 2  # bad configuration or usage
    API = 3  # the API failed or refused
    DATABASE = 4  # the database is missing, unreachable, locked or not migrated
    ACTIONS_FAILED = 5  # an action attempt failed: it is retried with backoff


class EtlError(Exception):
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(EtlError):
    exit_code = ExitCode.CONFIG


class ApiError(EtlError):
    exit_code = ExitCode.API

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        # the HTTP status of an answer that refused this request (not retried), else None: the
        # API was unreachable, overloaded or unreadable
        self.status = status


class DatabaseError(EtlError):
    exit_code = ExitCode.DATABASE

    def __init__(self, message: str, hint: str | None = None, refused: bool = False) -> None:
        super().__init__(message, hint)
        # the database refused what was written (not locked, unreachable or without schema)
        self.refused = refused


class SchemaError(DatabaseError):
    pass
