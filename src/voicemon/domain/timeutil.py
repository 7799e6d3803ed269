"""UTC time as integer epoch milliseconds, the only time representation inside voicemon.

Requests may give RFC 3339 with an offset or integer epoch milliseconds; replies always give RFC 3339 UTC
with ``Z`` and millisecond precision. Naive local times are refused: they would bucket differently on
servers in different time zones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def parse_time(value: object) -> int:
    """Return epoch milliseconds for an RFC 3339 string with offset or an integer epoch-ms value.

    >>> parse_time("2026-11-28T13:05:00+02:00")
    1795863900000
    >>> parse_time(1795863900000)
    1795863900000
    """
    if isinstance(value, bool):
        raise TimeParseError("invalid_time", "must be an RFC 3339 time with offset or integer epoch ms")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        if value.endswith("z"):  # RFC 3339 allows a lower-case "z"; fromisoformat does not
            value = value[:-1] + "Z"
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TimeParseError(
                "invalid_time", "must be an RFC 3339 time with offset or integer epoch ms"
            ) from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise TimeParseError("naive_time", "must carry a UTC offset such as Z or +02:00")
        ms = (parsed - _EPOCH) // _ONE_MS
    else:
        raise TimeParseError("invalid_time", "must be an RFC 3339 time with offset or integer epoch ms")
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise TimeParseError("invalid_time", "is outside the years 1970 to 9999")
    return ms


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def format_time(ms: int) -> str:
    """Render epoch milliseconds as RFC 3339 UTC with ``Z`` and milliseconds.

    >>> format_time(0)
    '1970-01-01T00:00:00.000Z'
    """
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def floor_to(ms: int, unit_ms: int) -> int:
    """Start of the UTC period of length ``unit_ms`` (minute, hour, day) that contains ``ms``."""
    return ms - ms % unit_ms
