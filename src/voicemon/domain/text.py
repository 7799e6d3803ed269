"""The one rule every string must meet before voicemon stores it or looks it up, on every database.

SQLite keeps any Python string; PostgreSQL does not. Its ``text`` cannot hold NUL (U+0000), and its UTF-8
cannot hold a lone UTF-16 surrogate (U+D800..U+DFFF), which Python strings, the stdlib ``json`` module
(``"\\ud800"``) and SQLite all accept. Such a string would be stored on one database and fail the write
on the other, so it is refused everywhere, before any database sees it: in events and their metadata,
retry reasons, organization and key names, query and path parameters.

Two kinds of string:

- ``TEXT`` (identifiers, messages, reasons, metadata, parameters) is kept exactly as given: only the
  two characters no database can hold are refused. Tabs and newlines in an error message are data.
- ``NAME`` (an organization's or a key's display name) is also shown on one line in terminals, tables,
  the dashboard and exports, so every control character (Unicode category Cc: U+0001..U+001F, U+007F,
  U+0080..U+009F) is refused too: an escape sequence in a name could rewrite the terminal that lists it.

:func:`check_text` is the rule; the event validator, the request models and the query/path dependency of
the HTTP API all call it, and all answer with its code and message.

>>> check_text("transcription timed out\\n") is None
True
>>> check_text("a\\x00b")
TextProblem(code='invalid_character', message='must not contain NUL (U+0000, at character 2)')
>>> check_text("Acme\\x1b[2J", kind=NAME).code
'invalid_character'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from voicemon.errors import ValidationError

INVALID_CHARACTER = "invalid_character"


class TextKind(StrEnum):
    TEXT = "text"
    NAME = "name"


TEXT = TextKind.TEXT
NAME = TextKind.NAME

_REFUSED = {
    TEXT: re.compile("[\x00\ud800-\udfff]"),
    NAME: re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]"),
}


@dataclass(frozen=True, slots=True)
class TextProblem:
    """Why a string is refused: ``code`` for programs, ``message`` for people (it names the character)."""

    code: str
    message: str


def check_text(value: str, *, kind: TextKind = TEXT) -> TextProblem | None:
    """``None`` if ``value`` may be kept, else the first refused character as a :class:`TextProblem`.

    Characters are counted from 1, in code points.
    """
    if kind is TEXT and value.isascii() and "\x00" not in value:
        return None  # the common case, without the regular expression
    found = _REFUSED[kind].search(value)
    if found is None:
        return None
    point = ord(found.group())
    where = f"U+{point:04X}, at character {found.start() + 1}"
    if point == 0:
        what = "NUL"
    elif 0xD800 <= point <= 0xDFFF:
        what = "a lone UTF-16 surrogate"
    else:
        what = "a control character"
    return TextProblem(INVALID_CHARACTER, f"must not contain {what} ({where})")


def require_text(field: str, value: str, *, max_chars: int, kind: TextKind = TEXT) -> str:
    """``value`` if it is 1 to ``max_chars`` characters, not blank, and meets :func:`check_text`; else
    :class:`~voicemon.errors.ValidationError` naming ``field`` and the rule. For use cases that keep a
    caller's string (a retry reason, a display name), whichever entry point the string came through."""
    if not value.strip() or len(value) > max_chars:
        raise ValidationError(
            f"must be 1 to {max_chars} characters and not blank", code="invalid_length", field=field
        )
    problem = check_text(value, kind=kind)
    if problem is not None:
        raise ValidationError(problem.message, code=problem.code, field=field)
    return value
