"""How a request body that is not JSON is refused, the same way on every route: 400 ``invalid_json``,
naming the parser's reason and where it stopped.

>>> not_json(json.JSONDecodeError("Expecting value", '{"name": ', 9)).message
'is not valid JSON: Expecting value at line 1 column 10'
"""

from __future__ import annotations

import json

from voicemon.errors import BadRequest


def not_json(exc: json.JSONDecodeError) -> BadRequest:
    """The refusal of a body that ``exc`` (the stdlib's or orjson's, a subclass) could not read."""
    return BadRequest(
        f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        code="invalid_json",
        field="body",
    )


def not_json_at(reason: str, document: object, position: object) -> BadRequest:
    """The same from FastAPI's report of it (``json_invalid``: the reason, the text, the offset)."""
    if isinstance(document, str) and isinstance(position, int):
        return not_json(json.JSONDecodeError(reason, document, position))
    return BadRequest(f"is not valid JSON: {reason}", code="invalid_json", field="body")
