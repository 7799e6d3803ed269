"""Builders for test events and small recount helpers (the "bare" truths the code is checked against)."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

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


def assert_error(response: Any, status: int, code: str | None = None, field: str | None = None) -> str:
    """Checks the one error shape of SPEC 7 (``{"error": {"code", "message"}}``, both non-empty
    strings), the status and, when given, the code and the field the message names first. Returns the
    message (after ``field: `` when a field is given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    error_code, message = body["error"]["code"], body["error"]["message"]
    assert isinstance(error_code, str), body
    assert isinstance(message, str), body
    assert error_code, body
    assert message, body
    if code is not None:
        assert error_code == code, body
    if field is not None:
        assert message.startswith(f"{field}: "), message
        return message.removeprefix(f"{field}: ")
    return message


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)
