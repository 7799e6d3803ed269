"""Builders for test events and small recount helpers (the "bare" truths the code is checked against)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from voicemon.domain.timeutil import format_time

_ids = itertools.count(1)

# The console script of the environment the tests run in.
VOICEMON = Path(sys.executable).with_name("voicemon")


SOAK = os.environ.get("VOICEMON_SOAK") == "1"
"""``make soak``: the survival tests run their long versions."""


def soaked(normal: int, long: int) -> int:
    """A trial count: ``long`` under ``make soak``, else ``normal`` (seconds, for every CI run)."""
    return long if SOAK else normal


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


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """``app`` on a real socket (uvicorn in a thread, no lifespan), for clients that need one: what they
    see is what a client on the wire sees."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "the server to listen")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class ServerProcess:
    """``voicemon serve --no-scheduler`` (or, with ``scheduler``, with its scheduler; ``extra``: more
    options) as a child process that can be stopped, killed and restarted on the same port and
    database."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        port: int | None = None,
        *,
        scheduler: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        self.args = [*([] if scheduler else ["--no-scheduler"]), *extra]
        self.env = env
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        assert not self.running
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(VOICEMON), "serve", *self.args, "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"server not up after {timeout_s} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """A graceful stop (SIGTERM), escalating to SIGKILL."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class TcpProxy:
    """A TCP relay on 127.0.0.1 in front of a server (PostgreSQL), that a test can cut and restore: the
    database going away and coming back, as its clients see it, without touching the database itself."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()  # refused while cut: as a stopped server refuses
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        self._open.clear()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
