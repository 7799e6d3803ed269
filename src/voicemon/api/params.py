"""Query parameters the routes share (times: see :func:`~voicemon.domain.timeutil.parse_time_text`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size, 1 to 500")]

# A cursor holds the last row's key, ids of up to 128 characters included, as base64url JSON: 128
# characters may take 6 bytes each in JSON, so a cursor of two ids stays under 2200 characters.
CURSOR_MAX_CHARS = 4096
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=CURSOR_MAX_CHARS,
        description="the `next_cursor` of the previous page, with the same filters; a cursor of another"
        " list or of other filters is refused with 400 `invalid_cursor`",
    ),
]
