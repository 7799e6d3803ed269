"""Opaque list cursors: the sort key of the last row a page returned, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from voicemon.errors import ValidationError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def encode_cursor(kind: str, key: tuple[int | str, ...]) -> str:
    raw = orjson.dumps([kind, *key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, *rest: type) -> tuple[Any, ...]:
    """The (time, tie-breakers...) key inside ``cursor``, the tie-breakers of the types ``rest``;
    :class:`ValidationError` if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeError):
        value = None
    if (
        isinstance(value, list)
        and len(value) == 2 + len(rest)
        and value[0] == kind
        and all(_fits(v, t) for v, t in zip(value[1:], (int, *rest), strict=True))
    ):
        return tuple(value[1:])
    raise ValidationError("is not a cursor this list returned", code="invalid_cursor", field="cursor")


def _fits(value: object, kind: type) -> bool:
    """A key part the database can compare: a 64-bit integer, or a string without NUL (PostgreSQL text)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, str) and "\x00" not in value
