"""The request edge (api/edge.py): the key is checked before any body is read, and every body is bounded.

Most of these drive the ASGI app directly, with a ``receive`` that hands out the body 64 KiB at a time and
records how many chunks the app pulled: "not read" means not one chunk was asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from tests.conftest import Api
from voicemon.api import create_app
from voicemon.api.edge import EVENTS_BODY_BYTES, SMALL_BODY_BYTES
from voicemon.clock import FakeClock
from voicemon.errors import StorageError
from voicemon.service import Services
from voicemon.settings import Settings

CHUNK = 64 * 1024
HUGE = 64 * 1024 * 1024


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    pulled: int  # body chunks the app asked for

    @property
    def code(self) -> str:
        return str(self.body["error"]["code"])


@dataclass
class Client:
    """A client that sends ``chunks`` chunks of 64 KiB when asked, then (if ``stall``) nothing more."""

    chunks: int
    stall: bool = False
    pulled: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def receive(self) -> dict[str, Any]:
        if self.pulled >= self.chunks:
            await asyncio.sleep(3600)  # a client that stopped sending
        self.pulled += 1
        last = self.pulled == self.chunks and not self.stall
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": not last}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def call(
    app: FastAPI,
    method: str,
    path: str,
    headers: dict[str, str],
    chunks: int,
    *,
    declared: int | None = None,
    stall: bool = False,
) -> Reply:
    raw_headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    if declared is not None:
        raw_headers.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    client = Client(chunks, stall)
    asyncio.run(asyncio.wait_for(app(scope, client.receive, client.send), 30))
    start = next(m for m in client.sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in client.sent if m["type"] == "http.response.body")
    reply_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Reply(start["status"], reply_headers, orjson.loads(body), client.pulled)


WRITES = [
    ("POST", "/v1/artifacts/a1/retries"),
    ("PUT", "/v1/orgs/org-x"),
    ("POST", "/v1/jobs/cleanup-events/runs"),
    ("POST", "/v1/events"),
]
SMALL_WRITES = WRITES[:3]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    ("authorization", "code"), [(None, "missing_key"), ("Bearer vm_nope", "invalid_key")]
)
def test_an_unauthenticated_body_is_never_read(
    api: Api, method: str, path: str, authorization: str | None, code: str
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    for declared in (HUGE, None):  # declared, or streamed without a length
        reply = call(api.client.app, method, path, headers, HUGE // CHUNK, declared=declared)
        assert (reply.status, reply.code, reply.pulled) == (401, code, 0)
        assert reply.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_declared_length_over_the_limit_is_refused_unread(api: Api, method: str, path: str) -> None:
    auth = {"Authorization": f"Bearer {api.staff_key}", "Content-Type": "application/json"}
    reply = call(api.client.app, method, path, auth, 3200, declared=200 * 1024 * 1024)
    assert (reply.status, reply.code, reply.pulled) == (413, "payload_too_large", 0)


@pytest.mark.parametrize(("method", "path"), SMALL_WRITES)
def test_a_streamed_body_is_cut_as_it_passes_the_limit(api: Api, method: str, path: str) -> None:
    auth = {"Authorization": f"Bearer {api.staff_key}", "Content-Type": "application/json"}
    reply = call(api.client.app, method, path, auth, 1000)
    assert (reply.status, reply.code) == (413, "payload_too_large")
    assert reply.pulled == SMALL_BODY_BYTES // CHUNK + 1


def test_the_events_endpoint_streams_up_to_its_own_limit(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.staff_key}", "Content-Type": "application/json"}
    reply = call(api.client.app, "POST", "/v1/events", auth, 2000)
    assert (reply.status, reply.code) == (413, "payload_too_large")
    assert reply.pulled == EVENTS_BODY_BYTES // CHUNK + 1


def _batch_of_exactly(size: int) -> bytes:
    events = [
        {
            "event_type": "artifact_received",
            "artifact_id": f"big-{i}",
            "error_message": "x" * 2000,
            "metadata": {"note": "y" * 2900},
        }
        for i in range(1000)
    ]
    body = orjson.dumps({"events": events})
    assert len(body) <= size
    return body + b" " * (size - len(body))  # JSON allows trailing whitespace


def test_the_events_endpoint_accepts_a_batch_of_5_mib(api: Api) -> None:
    body = _batch_of_exactly(EVENTS_BODY_BYTES)
    assert len(body) == 5 * 1024 * 1024
    headers = {"Content-Type": "application/json"}
    r = api.call("POST", "/v1/events", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1000
    r = api.call("POST", "/v1/events", content=body + b" ", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")


def test_every_endpoint_has_a_body_limit(api: Api) -> None:
    big = b" " * (SMALL_BODY_BYTES + 1)
    for method, path in [("GET", "/v1/orgs"), ("GET", "/v1/events"), ("GET", "/healthz")]:
        r = api.call(method, path, content=big)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large"), (method, path)
    r = api.call("GET", "/v1/orgs", content=b" " * SMALL_BODY_BYTES)
    assert r.status_code == 200


@pytest.mark.parametrize("value", ["ten", "-1", "1e3", "0x10"])
def test_a_content_length_that_is_not_a_number_is_refused(api: Api, value: str) -> None:
    auth = {"Authorization": f"Bearer {api.staff_key}", "Content-Length": value}
    reply = call(api.client.app, "PUT", "/v1/orgs/org-x", auth, 1)
    assert (reply.status, reply.code, reply.pulled) == (400, "invalid_content_length", 0)


@pytest.fixture
def impatient_app(settings: Settings, api: Api) -> Iterator[FastAPI]:
    """An app on the same database whose edge waits 0.2 s for each piece of a body."""
    svc = Services(settings.model_copy(update={"body_idle_timeout_s": 0.2}), FakeClock(0))
    yield create_app(services=svc)
    svc.db.dispose()


@pytest.mark.parametrize(("method", "path"), [*SMALL_WRITES, ("POST", "/v1/events")])
def test_a_body_that_stops_arriving_gets_408(
    api: Api, impatient_app: FastAPI, method: str, path: str
) -> None:
    auth = {"Authorization": f"Bearer {api.staff_key}", "Content-Type": "application/json"}
    reply = call(impatient_app, method, path, auth, 1, stall=True)
    assert (reply.status, reply.code, reply.pulled) == (408, "request_timeout", 1)


def test_the_key_is_checked_once_per_request(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge authenticates; the ``principal`` dependency takes its result instead of asking again."""
    keys = api.services.keys
    real = keys.authenticate
    seen: list[str | None] = []

    def counting(presented: str | None) -> Any:
        seen.append(presented)
        return real(presented)

    monkeypatch.setattr(keys, "authenticate", counting)
    r = api.call("PUT", "/v1/orgs/org-x", json={"name": "X"})
    assert r.status_code == 200, r.text
    assert seen == [api.staff_key]


def test_a_database_down_while_authenticating_is_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(_: str | None) -> Any:
        raise StorageError("the database is unreachable")

    monkeypatch.setattr(api.services.keys, "authenticate", unavailable)
    reply = call(api.client.app, "PUT", "/v1/orgs/org-x", {"Authorization": "Bearer x"}, 10, declared=HUGE)
    assert (reply.status, reply.code, reply.pulled) == (503, "storage_unavailable", 0)


def test_the_document_lists_the_error_replies(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in orjson.dumps(document).decode()
    error_reply = {"$ref": "#/components/schemas/ErrorReply"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if status == "422" or (path.startswith("/v1/") and not status.startswith("2")):
                    assert response["content"]["application/json"]["schema"] == error_reply, (path, status)
            if path.startswith("/v1/"):
                assert {"400", "401", "403", "408", "413", "422", "503"} <= responses.keys(), (method, path)
