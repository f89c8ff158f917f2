"""Time is aware UTC inside etl; the API sends RFC 3339, sometimes with nanoseconds."""

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TimeShift",
    "format_rfc3339",
    "jsonable",
    "local_date",
    "parse_duration",
    "parse_moment",
    "parse_rfc3339",
    "time_shift",
    "utcnow",
    "with_offset",
    "zone_or_utc",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?", re.ASCII
)


def parse_rfc3339(value: object) -> datetime:
    """An aware UTC datetime; digits beyond microseconds are dropped (Python keeps no more).
    RFC 3339 only (its `t` and `z` may be lowercase), not the other forms of ISO 8601."""
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time string, got {type(value).__name__}")
    match = RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value[:40]!r}")
    date, time, fraction, offset = match.groups()
    if offset is None:
        raise ValueError(f"time has no UTC offset: {value!r}")
    fraction = (fraction or "")[:7]  # the dot and six digits
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{time}{fraction}{offset}").astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"not a valid time: {value!r}") from None


def format_rfc3339(value: datetime) -> str:
    return with_offset(value.astimezone(UTC).isoformat())


def jsonable(value: object) -> object:
    """A value as JSON has it (event details, JSON output): times as RFC 3339, like the API's,
    with their own offset (UTC inside etl; another zone only when shown with --tz)."""
    return with_offset(value.isoformat()) if isinstance(value, datetime) else value


def with_offset(iso: str) -> str:
    return iso.replace("+00:00", "Z")


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, a name too long
        return None


# `--tz`: how a time is shown, given the name of its program's time zone (or None)
TimeShift = Callable[[datetime, str | None], datetime]
TZ_CHOICES = "utc, local, program or an IANA name such as America/Chicago"


def unshifted(moment: datetime, _zone: str | None) -> datetime:
    """`--tz utc`: etl's times are UTC already."""
    return moment


def time_shift(choice: str) -> TimeShift:
    """`utc`; `local`, this machine's zone; `program`, each time's own program's zone (UTC when
    it has none, or one unknown here); or an IANA zone name."""
    match choice.lower():
        case "utc":
            return unshifted
        case "local":
            try:  # a TZ variable this machine cannot use (TZ=XXX-99:99) fails here, not later
                utcnow().astimezone()
            except ValueError as error:
                raise ValueError(f"this machine's time zone cannot be used: {error}") from None
            return lambda moment, _: moment.astimezone()
        case "program":
            return lambda moment, program: moment.astimezone(zone_or_utc(program))
    zone = _zone(choice)
    if zone is None:
        raise ValueError(f"unknown time zone {choice[:60]!r}: use {TZ_CHOICES}")
    return lambda moment, _: moment.astimezone(zone)


def zone_or_utc(name: str | None) -> ZoneInfo | timezone:
    """The named time zone, or UTC when there is none or it is unknown here."""
    return (_zone(name) if name else None) or UTC


def local_date(value: datetime, zone_name: str) -> str:
    """The date ('YYYY-MM-DD') of an instant in a named time zone, or in UTC if the zone is
    unknown. Stored with each dispatch, because SQLite has no time zones to convert with."""
    return value.astimezone(zone_or_utc(zone_name)).date().isoformat()


# each unit of a duration, in seconds
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


LONGEST_DURATION = timedelta(days=100 * 366)  # any longer is a typo, and overflows dates


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '30m', '45s', '2w', up to 100 years."""
    number, unit = text[:-1], text[-1:]
    if unit not in DURATION_UNITS or not number.isascii() or not number.isdigit():
        raise ValueError(f"not a duration: {text[:40]!r} (use e.g. 30m, 24h, 7d, 2w)")
    # in whole numbers, and 100 years of seconds is 10 digits: a float of 400 digits' worth
    # overflows, and Python refuses to read an int of over 4,300
    digits = number.lstrip("0") or "0"
    seconds = 0 if len(digits) > 12 else int(digits) * DURATION_UNITS[unit]
    if len(digits) > 12 or seconds > LONGEST_DURATION.total_seconds():
        raise ValueError(f"duration too long: {text[:40]!r} (at most 100 years)")
    return timedelta(seconds=seconds)


def parse_moment(text: str) -> datetime:
    """A user's point in time: an ISO date or time (UTC unless it says otherwise), or a duration
    meaning that long ago ('24h')."""
    if text[-1:] in DURATION_UNITS and text[:-1].isascii() and text[:-1].isdigit():
        return utcnow() - parse_duration(text)
    # imported here: it costs the minutely job 20 ms, and only report commands need it
    from dateutil.parser import isoparse

    try:
        parsed = isoparse(text)
        # in UTC: 0001-01-01T00:00+14:00 is a valid time that falls before the year 1
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            f"not a time: {text[:60]!r} (use e.g. 2024-02-02, 2024-02-02T09:00Z or 24h for 24 "
            "hours ago; years 1 to 9999 in UTC)"
        ) from None
