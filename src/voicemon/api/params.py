"""Shared query parameters and their parsing into domain values."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from voicemon.domain.timeutil import TimeParseError, parse_time
from voicemon.errors import ValidationError

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size, 1 to 500")]


def parse_time_param(name: str, value: str | None) -> int | None:
    """A query-string time: RFC 3339 with offset, or epoch milliseconds as digits."""
    if value is None:
        return None
    candidate: str | int = value
    if value.lstrip("-").isdigit():
        try:
            candidate = int(value)
        except ValueError:  # "--1", "²", or more digits than int() parses: not epoch ms
            candidate = value
    try:
        return parse_time(candidate)
    except TimeParseError as exc:
        raise ValidationError(f"{name} {exc}", code=exc.code, field=name) from None
