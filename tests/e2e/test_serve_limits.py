"""``voicemon serve`` holds up against slow, silent and oversized clients (api/server.py, api/edge.py).

One real server process, with a 1 s request-head deadline and room for three connections, spoken to
over raw sockets so that the test controls every byte. Time bounds are generous: the point is "closed
or answered at all" versus "held open or read for ever".
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import process_database
from tests.helpers import VOICEMON, ServerProcess

HEAD_TIMEOUT_S = 1
MAX_CONNECTIONS = 3
# Far above the head deadline, far below "held for ever".
CLOSED_WITHIN_S = 8.0

pytestmark = pytest.mark.slow


@dataclass
class Server:
    port: int
    pid: int
    staff_key: str
    log: Path


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with process_database(tmp_path_factory, "serve") as url:
        yield url


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        **os.environ,
        "VOICEMON_DATABASE_URL": database_url,
        "VOICEMON_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "VOICEMON_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    subprocess.run([str(VOICEMON), "db", "upgrade"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [str(VOICEMON), "keys", "create", "--role", "staff"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    process = ServerProcess(env, log)
    try:
        process.start(60)
        assert process.proc is not None
        yield Server(process.port, process.proc.pid, key, log)
    finally:
        process.kill()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=CLOSED_WITHIN_S)
    return sock


def seconds_until_closed(sock: socket.socket) -> float:
    """Reads (and drops) what the server sends until it closes; how long that took."""
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {CLOSED_WITHIN_S} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One HTTP reply with a Content-Length body: status, headers, decoded JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the reply body"
        body += chunk
    return int(status_line.split()[1]), headers, orjson.loads(body)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert seconds_until_closed(sock) < CLOSED_WITHIN_S


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(server: Server) -> None:
    """Every byte arrives well within the deadline, but the head as a whole does not."""
    head = b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with connect(server) as sock:
        start = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - start > CLOSED_WITHIN_S:
                    pytest.fail("the server still takes a head that has been arriving for 8 s")
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            pytest.fail("the whole slow head was taken")


def test_an_idle_keep_alive_connection_is_closed_after_its_reply(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            f"GET /v1/orgs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.staff_key}\r\n\r\n".encode()
        )
        status, _, body = read_reply(sock)
        assert status == 200, body
        sock.sendall(b"GET /v1/orgs HTTP/1.1\r\n")  # a second request that never completes its head
        assert seconds_until_closed(sock) < CLOSED_WITHIN_S


def test_serve_prints_the_address_it_listens_on(server: Server) -> None:
    assert f"voicemon listening on http://127.0.0.1:{server.port}" in server.log.read_text()


def test_a_control_character_in_a_header_gets_a_json_400(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v1/orgs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x01b\r\n\r\n")
        status, headers, body = read_reply(sock)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/artifacts/a1/retries"), ("PUT", "/v1/orgs/x"), ("POST", "/v1/events")]
)
def test_a_huge_declared_body_is_answered_at_once(server: Server, method: str, path: str) -> None:
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for authorization, expected in [
        ("", (401, "missing_key")),
        (server.staff_key, (413, "payload_too_large")),
    ]:
        with connect(server) as sock:
            sock.settimeout(5)
            auth = f"Authorization: Bearer {authorization}\r\n" if authorization else ""
            sock.sendall(f"{request}{auth}Content-Length: 209715200\r\n\r\n".encode())
            status, _, body = read_reply(sock)
        assert (status, body["error"]["code"]) == expected


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_an_unauthenticated_64_mib_body_is_not_held_in_memory(server: Server) -> None:
    body = b'{"name": "' + b"a" * (64 * 1024 * 1024) + b'"}'
    before = _rss_kib(server.pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib(server.pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with connect(server) as sock:
            sock.settimeout(30)
            sock.sendall(
                f"PUT /v1/orgs/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(body)  # the server answers first and drops the rest
            status, _, reply = read_reply(sock)
    finally:
        done.set()
        sampler.join()
    assert (status, reply["error"]["code"]) == (401, "missing_key")
    # The whole body in memory costs well over 64 MiB (over 190 MiB measured); allow a generous margin.
    assert (peak[0] - before) / 1024 < 32


def test_connections_beyond_the_limit_get_a_json_503(server: Server) -> None:
    idle = [connect(server) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_reply(sock)
    finally:
        for s in idle:
            s.close()
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == "over_capacity"
    # The slots free up as those connections go.
    deadline = time.monotonic() + CLOSED_WITHIN_S
    while httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the connection limit did not free up"
        time.sleep(0.1)
