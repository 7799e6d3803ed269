"""The HTTP server's own limits, for ``voicemon serve``: a deadline for each request head, and JSON error
bodies for the replies the server gives without asking the app.

Why a subclass: uvicorn (written against 0.54 and its httptools protocol, the one ``serve`` uses) times
out a connection only while it is idle after a response, and any byte received cancels that timer, so a
client that connects and sends nothing, or sends a request head a byte at a time, holds its connection
for ever. And the replies uvicorn writes itself are plain text, where every voicemon reply is the JSON
error body of SPEC 7. :class:`GuardedHttpProtocol` changes only that:

- a head deadline, armed when the connection opens and after each response, cancelled when a request
  head is complete; when it passes, the connection is closed;
- a request the HTTP parser rejects (a control character in a header, a malformed request line) gets
  ``400 {"error": {"code": "bad_request", ...}}``;
- a request over the connection limit (uvicorn's ``limit_concurrency``, checked as uvicorn checks it)
  gets ``503 {"error": {"code": "over_capacity", ...}}``.

:func:`build_server` is the one place a server is configured, for ``serve`` and ``demo`` alike; the
server it builds prints the address it listens on once its socket is bound (uvicorn's own log stays at
warning level).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voicemon.settings import Settings


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


_OVER_CAPACITY = _error_body("over_capacity", "the server is at its connection limit; try again shortly")
_INVALID_HTTP = _error_body(
    "bad_request", "invalid HTTP request: a header holds a control character, or the request is malformed"
)


async def _over_capacity(_scope: Scope, _receive: Receive, send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_OVER_CAPACITY)).encode("ascii")),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _OVER_CAPACITY, "more_body": False})


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and JSON replies of its own."""

    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        # The limit is checked in on_headers_complete below, to answer in JSON; uvicorn must not.
        self._max_concurrency = self.limit_concurrency
        self.limit_concurrency = None

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._cancel_head_deadline()
        limit = self._max_concurrency
        over = limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)
        self.app = _over_capacity if over else self.config.loaded_app
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle now, unless a pipelined request already sent its head and is being answered.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm_head_deadline()

    def send_400_response(self, msg: str) -> None:
        head = [
            b"HTTP/1.1 400 Bad Request\r\n",
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(_INVALID_HTTP)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + _INVALID_HTTP)
        self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedHttpProtocol]:
    """The protocol class (uvicorn's ``http=``) with this process's head deadline."""
    return type("VoicemonHttpProtocol", (GuardedHttpProtocol,), {"head_timeout_s": settings.header_timeout_s})


class AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints ``voicemon listening on http://HOST:PORT`` to stderr once bound (with
    the port the system chose, when asked for port 0); ``announce`` False keeps it quiet."""

    announce = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started or not self.announce:
            return
        for server in self.servers:
            for bound in server.sockets:
                host, port = bound.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                sys.stderr.write(f"voicemon listening on http://{shown}:{port}\n")
                sys.stderr.flush()


def build_server(app: Any, settings: Settings, host: str, port: int) -> AnnouncingServer:
    """The server ``serve`` and ``demo`` run: the guarded protocol, the connection limit and keep-alive
    from settings. The app bounds bodies (:mod:`voicemon.api.edge`)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=protocol_for(settings),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
    )
    return AnnouncingServer(config)


PR_SET_PDEATHSIG = 1  # prctl(2)


def _stop_with_parent(parent: int) -> None:
    """Ask the kernel (Linux) for SIGTERM when the parent process dies: a parent killed with SIGKILL
    can tell no one, and its workers would go on serving on their own. If the parent died already,
    SIGTERM now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


STARTUP_FAILED = 3
"""Exit status of a server process whose app did not start (uvicorn's own)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket that forked server processes share (the kernel hands each new
    connection to one of them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_forked(build: Callable[[], AnnouncingServer], sock: socket.socket, workers: int) -> int:
    """Run ``workers`` server processes on ``sock``, each a whole server of its own (app, writer, pools)
    built by ``build`` after the fork; the first announces the address once it accepts.

    The parent only watches. SIGTERM or SIGINT stops every process (each finishes the requests it has).
    A process that ends is started again, after a pause that doubles while it keeps failing (up to
    30 s): a database away when it restarts does not stop the others. Only when a process of the first
    start cannot start its app does the parent stop them all and return :data:`STARTUP_FAILED`. Returns
    0 after a requested stop."""
    children: dict[int, int] = {}
    stopping = False
    signals = {signal.SIGTERM, signal.SIGINT}

    def start(index: int) -> None:
        # Blocked around the fork: a stop that arrives meanwhile is handled once the child is known.
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                _child(build, sock, index, signals, parent)
            children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for signum in signals:
        signal.signal(signum, stop)
    for index in range(workers):
        start(index)
    first_start = set(range(workers))
    pause_s = dict.fromkeys(range(workers), 0.5)
    result = 0
    while children:
        pid, status = os.wait()
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if code == STARTUP_FAILED and index in first_start:
            result = STARTUP_FAILED
            stop(signal.SIGTERM, None)
            continue
        first_start.discard(index)
        pause_s[index] = min(pause_s[index] * 2, 30.0) if code == STARTUP_FAILED else 1.0
        again = f"starting it again in {pause_s[index]:g} s"
        sys.stderr.write(f"voicemon server process {index} ended (status {code}); {again}\n")
        sys.stderr.flush()
        time.sleep(pause_s[index])
        if not stopping:
            start(index)
    sock.close()
    return result


def _child(
    build: Callable[[], AnnouncingServer],
    sock: socket.socket,
    index: int,
    signals: set[signal.Signals],
    parent: int,
) -> None:
    """A forked server process: serve until stopped, then leave without running the parent's cleanup.
    It is stopped too when the parent dies, however it dies."""
    code = STARTUP_FAILED
    try:
        for signum in signals:
            signal.signal(signum, signal.SIG_DFL)
        _stop_with_parent(parent)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        server = build()
        server.announce = index == 0
        server.run(sockets=[sock])
        code = 0 if server.started else STARTUP_FAILED
    except BaseException:  # the child must always leave through os._exit
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)
