"""Query parameters the routes share (times: see :func:`~voicemon.domain.timeutil.parse_time_text`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size, 1 to 500")]
