"""A ``voicemon serve`` subprocess pinned to core 0 while the load runs on core 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
LOAD_CORE = 1


def cores() -> int:
    return len(os.sched_getaffinity(0))


def pin_load() -> None:
    """Keep the load generator off the server's core."""
    if cores() >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})


def unpin() -> None:
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(url: str, workers: int = 1) -> Iterator[str]:
    with server_process(url, workers) as (base, _):
        yield base


@contextmanager
def server_process(url: str, workers: int = 1, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The server and its process (to watch its memory); ``env`` adds settings. One process is pinned
    to its core; several (``--workers``, PostgreSQL) have every core."""
    port = free_port()
    voicemon = str(Path(sys.executable).with_name("voicemon"))
    cmd = [voicemon, "serve", "--no-scheduler", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    elif cores() >= 2:
        cmd = ["taskset", "-c", str(SERVER_CORE), *cmd]
    env = dict(os.environ, VOICEMON_DATABASE_URL=url, VOICEMON_EVENT_RETENTION_H="240", **env)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(
                "server did not start: " + (proc.stderr.read(2000).decode() if proc.stderr else "")
            )
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
