"""Time is aware UTC inside etl; the API sends RFC 3339, sometimes with nanoseconds."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_rfc3339(value: object) -> datetime:
    """An aware UTC datetime; digits beyond microseconds are dropped (Python keeps no more)."""
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"time has no UTC offset: {value!r}")
    return parsed.astimezone(UTC)


def format_rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
