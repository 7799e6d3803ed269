"""``voicemon serve --workers N`` (SPEC 19, decision 0034): N whole servers sharing one port on one
PostgreSQL, watched by a parent that starts again any of them that dies and stops them all on SIGTERM;
``/metrics``, whichever of them answers, counts what all of them did."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.cli_runner import Cli
from tests.conftest import BACKEND, process_database
from tests.helpers import ServerProcess, ev, wait_for


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _gone(pid: int) -> bool:
    """The process has ended (reaped, or a zombie waiting to be)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def _accepted(url: str, headers: dict[str, str]) -> float:
    """``voicemon_events_total`` of accepted receipts, from a scrape on a new connection."""
    reply = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    return sum(
        s.value
        for s in families["voicemon_events"].samples
        if s.name == "voicemon_events_total"
        and s.labels == {"event_type": "artifact_received", "outcome": "accepted"}
    )


@pytest.fixture
def cli(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with process_database(tmp_path_factory, "workers") as url:
        yield Cli(tmp_path, url)


@pytest.mark.skipif(BACKEND != "postgresql", reason="several server processes need PostgreSQL")
def test_workers_share_the_port_and_a_dead_one_is_started_again(cli: Cli, tmp_path: Path) -> None:
    key = cli.key(name="workers")
    counted = tmp_path / "metrics"
    counted.mkdir()
    (counted / "counter_1.db").write_bytes(b"stale")  # an earlier run's: emptied at start
    env = {**cli.env, "PROMETHEUS_MULTIPROC_DIR": str(counted)}
    server = ServerProcess(env, tmp_path / "serve.log", extra=["--workers", "2"])
    server.start()
    try:
        assert server.proc is not None
        parent = server.proc.pid
        first = _children(parent)
        assert len(first) == 2
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            for i in range(40):  # new connections: the kernel hands them to either process
                batch = [ev("artifact_received", f"w-{i}-{j}", organization_id="org-w") for j in range(25)]
                reply = httpx.post(f"{server.url}/v1/events", json={"events": batch}, headers=headers)
                assert reply.status_code == 200, reply.text
                assert reply.json()["accepted"] == 25

            # Both took some of the batches (each wrote counters of its own), and whichever of them
            # answers a scrape counts what both did.
            assert {f"counter_{pid}.db" for pid in first} <= {p.name for p in counted.iterdir()}
            assert not (counted / "counter_1.db").exists()
            assert {_accepted(server.url, headers) for _ in range(6)} == {1000}

            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(_children(parent) - first) == 1, 20, "the dead process to be replaced")
            assert victim not in _children(parent)
            assert client.get("/healthz").status_code == 200
            listed = client.get("/v1/artifacts", params={"organization_id": "org-w", "limit": 1})
            assert listed.status_code == 200, listed.text
            # The dead process's counts stay in the sum: a counter never goes back.
            assert {_accepted(server.url, headers) for _ in range(6)} == {1000}

        assert server.proc.poll() is None
        now = _children(parent)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        assert all(_gone(pid) for pid in now)
        assert "starting it again" in server.log.read_text()
    finally:
        server.kill()


@pytest.mark.skipif(BACKEND != "postgresql", reason="several server processes need PostgreSQL")
def test_workers_stop_when_their_parent_is_killed(cli: Cli, tmp_path: Path) -> None:
    server = ServerProcess(cli.env, tmp_path / "serve.log", extra=["--workers", "2"])
    server.start()
    assert server.proc is not None
    workers = _children(server.proc.pid)
    assert len(workers) == 2
    server.kill()  # SIGKILL: the parent can tell no one
    wait_for(lambda: all(_gone(pid) for pid in workers), 20, "the workers to stop with their parent")


@pytest.mark.skipif(BACKEND == "postgresql", reason="the refusal is SQLite's")
def test_workers_on_sqlite_is_a_usage_error(cli: Cli) -> None:
    result = cli.run("serve", "--workers", "2")
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "PostgreSQL" in result.stderr
