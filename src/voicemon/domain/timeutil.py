"""UTC time as integer epoch milliseconds, the only time representation inside voicemon.

Requests may give RFC 3339 with an offset or integer epoch milliseconds; replies always give RFC 3339 UTC
with ``Z`` and millisecond precision. Naive local times are refused: they would bucket differently on
servers in different time zones.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache

from voicemon.errors import ValidationError

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# Anything outside this range is not a plausible event time (year 1970 to 9999).
MIN_TIME_MS = 0
MAX_TIME_MS = 253_402_300_799_999


class TimeParseError(ValueError):
    """Raised by :func:`parse_time`; ``code`` is ``invalid_time`` or ``naive_time``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# RFC 3339 section 5.6 ``date-time``: "T" and "Z" in either case, one or more fraction digits, and an
# offset of exactly "Z" or "+HH:MM" / "-HH:MM". ISO 8601's other spellings (basic format, minutes without
# seconds, "+0000", a space instead of "T") are refused: a time is read one way only.
_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_TIME = r"[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
_RFC3339 = re.compile(_DATE + _TIME + r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
# The same without an offset, or a date alone: a local time, refused with its own code.
_NAIVE = re.compile(_DATE + f"(?:{_TIME})?")

_INVALID = "must be an RFC 3339 time with offset (2026-11-28T13:05:00Z) or integer epoch ms"
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def parse_time(value: object) -> int:
    """Return epoch milliseconds for an RFC 3339 string with offset or an integer epoch-ms value.

    Fractions finer than a millisecond are truncated. Leap seconds (``:60``) are refused: epoch
    milliseconds, like POSIX time, have no name for them. Raises :class:`TimeParseError`.

    >>> parse_time("2026-11-28T13:05:00+02:00")
    1795863900000
    >>> parse_time(1795863900000)
    1795863900000
    """
    if isinstance(value, bool):
        raise TimeParseError("invalid_time", _INVALID)
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        ms = _parse_rfc3339(value)
    else:
        raise TimeParseError("invalid_time", _INVALID)
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise TimeParseError("invalid_time", "is outside the years 1970 to 9999")
    return ms


def _parse_rfc3339(text: str) -> int:
    found = _RFC3339.fullmatch(text)
    if found is None:
        naive = _NAIVE.fullmatch(text)
        if naive is not None and _local_ms(*naive.groups()) is not None:
            raise TimeParseError("naive_time", "must carry a UTC offset such as Z or +02:00")
        raise TimeParseError("invalid_time", _INVALID)
    *local, sign, offset_hour, offset_minute = found.groups()
    ms = _local_ms(*local)
    if ms is None:
        raise TimeParseError("invalid_time", "is not a calendar date and time (no leap seconds)")
    if sign is not None:
        hours, minutes = int(offset_hour), int(offset_minute)
        if hours > 23 or minutes > 59:
            raise TimeParseError("invalid_time", "has an offset outside -23:59 to +23:59")
        offset_ms = hours * HOUR_MS + minutes * MINUTE_MS
        ms -= offset_ms if sign == "+" else -offset_ms
    return ms


def _local_ms(
    year: str,
    month: str,
    day: str,
    hour: str | None,
    minute: str | None,
    second: str | None,
    fraction: str | None,
) -> int | None:
    """Milliseconds of a wall-clock time as if it were UTC, or ``None`` if a field is out of range."""
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    except ValueError:  # month 13, February 30, year 0
        return None
    h, m, s = int(hour or 0), int(minute or 0), int(second or 0)
    if h > 23 or m > 59 or s > 59:
        return None
    millis = int((fraction or "")[:3].ljust(3, "0"))
    return days * DAY_MS + h * HOUR_MS + m * MINUTE_MS + s * SECOND_MS + millis


def format_time(ms: int) -> str:
    """Render epoch milliseconds as RFC 3339 UTC with ``Z`` and milliseconds.

    >>> format_time(0)
    '1970-01-01T00:00:00.000Z'
    """
    day, in_day = divmod(ms, DAY_MS)
    seconds, millis = divmod(in_day, SECOND_MS)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_text(day)}T{_TWO[hours]}:{_TWO[minutes]}:{_TWO[seconds]}.{_THREE[millis]}Z"


# Rendered from parts (exports render millions of times): the date once per day, the rest from tables.
_TWO = tuple(f"{n:02d}" for n in range(60))
_THREE = tuple(f"{n:03d}" for n in range(1000))


@lru_cache(maxsize=1024)
def _day_text(day: int) -> str:
    return f"{datetime.fromtimestamp(day * 86_400, tz=UTC):%Y-%m-%d}"


def floor_to(ms: int, unit_ms: int) -> int:
    """Start of the UTC period of length ``unit_ms`` (minute, hour, day) that contains ``ms``."""
    return ms - ms % unit_ms


# Epoch milliseconds in a query string: ASCII digits only (str.isdigit also takes "²" and Arabic digits).
# Twenty digits are more than any valid time has, and few enough for int() to parse at once.
_EPOCH_MS = re.compile(r"-?[0-9]{1,20}")
# An RFC 3339 time whose "+" offset reached us as a space: an unencoded "+" in a query string means one.
_PLUS_AS_SPACE = re.compile(_DATE + _TIME + r" [0-9]{2}:[0-9]{2}")


def parse_time_text(name: str, value: str | None) -> int | None:
    """A query-string (or command-line) time: RFC 3339 with offset, or epoch milliseconds as digits.

    Raises ValidationError naming ``name``, with the code of :class:`TimeParseError` or ``empty``; when
    the value is such a time with a space where its offset's ``+`` belongs, the message says to send
    ``+`` as ``%2B``.

    >>> parse_time_text("end", "1795863900000")
    1795863900000
    """
    if value is None:
        return None
    if value == "":
        raise ValidationError("must not be empty; leave it out instead", code="empty", field=name)
    candidate: str | int = int(value) if _EPOCH_MS.fullmatch(value) else value
    try:
        return parse_time(candidate)
    except TimeParseError as exc:
        message = str(exc)
        if _PLUS_AS_SPACE.fullmatch(value):
            message += "; a space stands where the offset's + belongs: in a query string, send + as %2B"
        raise ValidationError(message, code=exc.code, field=name) from None
