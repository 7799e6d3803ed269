"""Builders for test events and small recount helpers (the "bare" truths the code is checked against)."""

from __future__ import annotations

import itertools
import socket
from typing import Any

from voicemon.domain.timeutil import format_time

_ids = itertools.count(1)


def ev(
    event_type: str, artifact_id: str | None = "a1", ts_ms: int | None = None, **fields: Any
) -> dict[str, Any]:
    """A JSON event as the pipeline would send it; ``ts_ms`` becomes an RFC 3339 timestamp."""
    body: dict[str, Any] = {"event_id": f"e-{next(_ids)}", "event_type": event_type}
    if artifact_id is not None:
        body["artifact_id"] = artifact_id
    if ts_ms is not None:
        body["timestamp"] = format_time(ts_ms)
    body.update(fields)
    return body


def items_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["items"], list)
    return body["items"]  # type: ignore[no-any-return]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
