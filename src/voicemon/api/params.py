"""Shared query parameters and their parsing into domain values."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query

from voicemon.domain.timeutil import TimeParseError, parse_time
from voicemon.errors import ValidationError

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size, 1 to 500")]

# Epoch milliseconds in a query string: ASCII digits only (str.isdigit also takes "²" and Arabic digits).
# Twenty digits are more than any valid time has, and few enough for int() to parse at once.
_EPOCH_MS = re.compile(r"-?[0-9]{1,20}")


def parse_time_param(name: str, value: str | None) -> int | None:
    """A query-string (or command-line) time: RFC 3339 with offset, or epoch milliseconds as digits.

    Raises ValidationError naming ``name``, with the code of :class:`TimeParseError` or ``empty``.

    >>> parse_time_param("end", "1795863900000")
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
        raise ValidationError(str(exc), code=exc.code, field=name) from None
