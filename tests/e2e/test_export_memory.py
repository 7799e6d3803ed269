"""A million-event export keeps the server's memory flat (SPEC 17): ``voicemon serve`` streams it from a
server-side cursor, so its peak resident set barely moves while a client reads 1 M rows over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.workload import fill_events_sql

from tests.api.cli_runner import Cli
from tests.conftest import BACKEND, process_database
from tests.helpers import ServerProcess
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import DAY_MS

EVENTS = 1_000_000
# A server that held the file would grow by hundreds of megabytes (about 220 MB of CSV).
MAX_GROWTH_MIB = 50
PROC = Path("/proc/self/status")


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    work = tmp_path_factory.mktemp("export-memory")
    with process_database(tmp_path_factory, "export_memory") as url:
        cli = Cli(work, url)
        svc = cli.services()
        try:
            key = svc.keys.create(SYSTEM, "staff", None, "export").secret
            now = svc.clock.now_ms()
            with svc.db.write() as conn:
                fill_events_sql(conn, EVENTS, now - 5 * DAY_MS, 4 * DAY_MS, postgres=BACKEND == "postgresql")
        finally:
            svc.db.dispose()
        server = ServerProcess(cli.env, work / "serve.log")
        server.start()
        try:
            yield server, key
        finally:
            server.stop()


@pytest.mark.skipif(not PROC.exists(), reason="reads the server's memory from /proc")
def test_a_million_event_export_keeps_the_servers_memory_flat(server: tuple[ServerProcess, str]) -> None:
    process, key = server
    assert process.proc is not None
    pid = process.proc.pid
    headers = {"Authorization": f"Bearer {key}"}
    # Warm the route once (imports, the first plan), then measure from a reset peak.
    assert httpx.get(f"{process.url}/v1/exports/events?format=csv&end=0", headers=headers).status_code == 200
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak resident set starts again from now
    before = _kib(pid, "VmRSS")
    lines = 0
    with httpx.stream(
        "GET", f"{process.url}/v1/exports/events?format=csv", headers=headers, timeout=300
    ) as reply:
        assert reply.status_code == 200
        for chunk in reply.iter_raw(1 << 20):
            lines += chunk.count(b"\n")
    growth_mib = (_kib(pid, "VmHWM") - before) / 1024
    assert lines == EVENTS + 1, "every event and the header arrived"
    assert growth_mib <= MAX_GROWTH_MIB, f"the server grew by {growth_mib:.1f} MiB"
