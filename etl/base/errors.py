"""The errors a user can cause or meet, each with a reason and what to do about it.

The CLI turns any EtlError into one line on stderr and the exit code below; anything else is a bug.
"""


class EtlError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(EtlError):
    exit_code = 2


class ApiError(EtlError):
    exit_code = 3

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        # the HTTP status of an answer that refused this request (not retried), else None: the
        # API was unreachable, overloaded or unreadable
        self.status = status


class DatabaseError(EtlError):
    exit_code = 4

    def __init__(self, message: str, hint: str | None = None, refused: bool = False) -> None:
        super().__init__(message, hint)
        # the database refused what was written (not locked, unreachable or without schema)
        self.refused = refused


class SchemaError(DatabaseError):
    pass
