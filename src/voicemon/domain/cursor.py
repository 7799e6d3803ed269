"""Opaque list cursors (SPEC 7): the list and filter a cursor belongs to, and where its page ended.

A cursor is base64url-encoded JSON: ``[kind, tag, *key]``. ``kind`` names the list (``"ev"``,
``"art"``); ``tag`` is a short hash of the kind and the list's normalised filter (the filter as the use
case applies it: times in epoch ms, the caller's organization filled in); ``key`` is the sort key of the
last row the page returned, with whatever else the list needs to go on from there. Replayed on another
list, or on the same list with other filters, a cursor is refused with :class:`BadRequest` (400
``invalid_cursor``) instead of answering a page of a list it never belonged to. It is not signed:
everything in it is a place in a list its holder may read anyway.

>>> scope = ("transcription_started", None)
>>> cursor = encode_cursor("ev", scope, (1_700_000_000_000, 42))
>>> decode_cursor(cursor, "ev", scope, int, int)
(1700000000000, 42)
>>> decode_cursor(cursor, "ev", ("artifact_failed", None), int, int)
Traceback (most recent call last):
...
voicemon.errors.BadRequest: was taken with other filters; start again without a cursor
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from voicemon.errors import BadRequest

Scope = Sequence[str | int | None]
"""The normalised filter of a list, in a fixed order: what a cursor is bound to."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
TAG_BYTES = 8


def cursor_tag(kind: str, scope: Scope) -> str:
    """The tag binding a cursor to list ``kind`` and filter ``scope``: 8 bytes of SHA-256, base64url."""
    digest = hashlib.sha256(orjson.dumps([kind, *scope])).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def encode_cursor(kind: str, scope: Scope, key: tuple[int | str, ...]) -> str:
    raw = orjson.dumps([kind, cursor_tag(kind, scope), *key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, scope: Scope, *types: type) -> tuple[Any, ...]:
    """The key inside ``cursor``, its parts of the types ``types``.

    Raises :class:`BadRequest` (``invalid_cursor``, field ``cursor``) unless ``cursor`` is one that list
    ``kind`` returned for the filter ``scope``.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeError):
        value = None
    if not (isinstance(value, list) and len(value) >= 2 and all(isinstance(v, str) for v in value[:2])):
        raise _refused("is not a cursor this list returned")
    if value[0] != kind:
        raise _refused("is a cursor of another list")
    if value[1] != cursor_tag(kind, scope):
        raise _refused("was taken with other filters; start again without a cursor")
    key = value[2:]
    if len(key) != len(types) or not all(_fits(v, t) for v, t in zip(key, types, strict=True)):
        raise _refused("is not a cursor this list returned")
    return tuple(key)


def _refused(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_cursor", field="cursor")


def _fits(value: object, kind: type) -> bool:
    """A key part the database can compare: a 64-bit integer, or a string without NUL (PostgreSQL text)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, str) and "\x00" not in value
