"""What every request passes before the app reads its body: the API key, then the body's size and pace.

FastAPI reads a request body before it resolves the dependencies that check the key, so without this an
unauthenticated client could make the server read (and hold) any amount of data before its 401. This
pure ASGI middleware runs in front of the routes:

1. On the key-protected paths (:func:`is_protected`) it authenticates ``Authorization: Bearer`` from the
   headers alone and answers 401 at once when that fails. The principal is left in the request state,
   where the :func:`~voicemon.api.deps.principal` dependency takes it: the key is checked once, here.
2. A declared ``Content-Length`` over the request's limit (:func:`body_limit_bytes`) is answered 413
   without reading; a body without one (chunked) is counted as it streams and refused with 413 as soon
   as it passes the limit. A ``Content-Length`` that is not a number is answered 400.
3. A client that stops sending in the middle of its body gets 408 after ``body_idle_timeout_s``.

Every refusal is a :class:`~voicemon.errors.VoicemonError` rendered by the app's one error mapping, so
these replies carry the same JSON body, codes and headers as the routes' own errors. A refused body is
not read further. The connection stays open so that a client still sending its body gets to read the
reply: the HTTP server drops what follows, for at most the request-head deadline of api/server.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicemon.domain.access import Principal
from voicemon.errors import BadRequest, PayloadTooLarge, VoicemonError
from voicemon.service.keys import KeyService

KIB = 1024
MIB = 1024 * KIB
# Ingestion takes batches of up to 1000 events; OTLP exporters send larger batches; the rest is small.
EVENTS_BODY_BYTES = 5 * MIB
OTLP_BODY_BYTES = 8 * MIB
SMALL_BODY_BYTES = 64 * KIB

# Where the request state keeps the principal the edge authenticated.
PRINCIPAL_STATE = "principal"

ErrorReply = Callable[[VoicemonError], Response]


class RequestTimeout(VoicemonError):
    """The client stopped sending its body before it was complete (HTTP 408)."""

    code = "request_timeout"
    http_status = 408


def is_protected(path: str) -> bool:
    """Whether requests to ``path`` need ``Authorization: Bearer <key>``.

    >>> is_protected("/v1/events"), is_protected("/metrics"), is_protected("/healthz")
    (True, True, False)
    """
    return path.startswith(("/v1/", "/otlp/")) or path == "/metrics" or path.startswith("/metrics/")


def body_limit_bytes(method: str, path: str) -> int:
    """The largest body a ``method`` request to ``path`` may carry, in bytes.

    >>> body_limit_bytes("POST", "/v1/events") // MIB, body_limit_bytes("GET", "/v1/events") // KIB
    (5, 64)
    """
    if path == "/v1/events" and method == "POST":
        return EVENTS_BODY_BYTES
    if path.startswith("/otlp/"):
        return OTLP_BODY_BYTES
    return SMALL_BODY_BYTES


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key == name]


def _bearer(scope: Scope) -> str | None:
    """The presented key, read as FastAPI's ``HTTPBearer`` reads it (first header, scheme in any case)."""
    values = _header(scope, b"authorization")
    if not values:
        return None
    scheme, _, credentials = values[0].decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


def _declared_length(scope: Scope) -> int | None:
    """The declared body size in bytes; None if not declared. Raises :class:`BadRequest`."""
    values = {value.strip() for value in _header(scope, b"content-length")}
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() for v in values):
        raise BadRequest("Content-Length must be one decimal number", code="invalid_content_length")
    return int(values.pop())


class _Body:
    """One request's body as the app pulls it: counted against its limit, each chunk awaited at most
    ``idle_s``. After a refusal the app's own reply is dropped and the edge answers instead."""

    def __init__(self, receive: Receive, send: Send, limit_bytes: int, idle_s: float) -> None:
        self._receive = receive
        self._send = send
        self._limit_bytes = limit_bytes
        self._idle_s = idle_s
        self._size = 0
        self._complete = False
        self.refused: VoicemonError | None = None
        self.reply_started = False
        self.status = 0

    async def receive(self) -> Message:
        if self.refused is not None:
            raise self.refused
        if self._complete:
            # Past the body the app may wait as long as it likes, e.g. for the client's disconnect.
            return await self._receive()
        try:
            with anyio.fail_after(self._idle_s):
                message = await self._receive()
        except TimeoutError:
            self.refused = RequestTimeout(f"no body data arrived for {self._idle_s:g} s")
            raise self.refused from None
        if message["type"] != "http.request":
            self._complete = True
            return message
        self._size += len(message.get("body", b""))
        if self._size > self._limit_bytes:
            self.refused = PayloadTooLarge(f"the body is over {self._limit_bytes} bytes")
            raise self.refused
        self._complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.refused is None:
            self.reply_started = True
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
            await self._send(message)


class RequestEdge:
    """Authenticate, then bound the body, before the app sees the request.

    ``error_reply`` renders a refusal as the app renders any :class:`VoicemonError`.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyService,
        error_reply: ErrorReply,
        body_idle_timeout_s: float,
        public_paths: frozenset[str] = frozenset(),
        observe: Callable[[Scope, int, float], None] | None = None,
    ) -> None:
        """``public_paths``: protected paths opened by a setting (``/metrics``); ``observe(scope, status,
        seconds)`` hears of every request the app answered, once it has."""
        self._app = app
        self._keys = keys
        self._error_reply = error_reply
        self._idle_s = body_idle_timeout_s
        self._public = public_paths
        self._observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        limit_bytes = body_limit_bytes(scope["method"], path)
        started = time.perf_counter()
        try:
            if is_protected(path) and path not in self._public:
                principal = await self._authenticate(_bearer(scope))
                scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
            declared = _declared_length(scope)
            if declared is not None and declared > limit_bytes:
                raise PayloadTooLarge(f"the body is over {limit_bytes} bytes")
        except VoicemonError as exc:
            await self._error_reply(exc)(scope, receive, send)
            return
        body = _Body(receive, send, limit_bytes, self._idle_s)
        try:
            await self._app(scope, body.receive, body.send)
        except Exception:
            # The app gave up on a body this edge refused: the refusal is the answer.
            if body.refused is None or body.reply_started:
                raise
        if body.refused is not None and not body.reply_started:
            await self._error_reply(body.refused)(scope, receive, send)
        elif self._observe is not None and body.status:
            self._observe(scope, body.status, time.perf_counter() - started)

    async def _authenticate(self, presented: str | None) -> Principal:
        return await authenticate(self._keys, presented)


async def authenticate(keys: KeyService, presented: str | None) -> Principal:
    """The principal behind a presented key: from the key cache, else from the database off the event
    loop. Raises :class:`~voicemon.errors.AuthError`."""
    known = keys.cached(presented)
    if known is not None:
        return known
    return await run_in_threadpool(keys.authenticate, presented)
