"""A database that goes away under load and comes back (SPEC 20): a clear 503 while it is away, never a
wrong answer, and service resumes without a restart. PostgreSQL, reached through a relay the test cuts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.api.cli_runner import Cli
from tests.conftest import BACKEND, postgres_database
from tests.helpers import ServerProcess, TcpProxy, ev, wait_for

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="a database server that goes away")

ORG = "org-outage"


@dataclass
class Outage:
    server: ServerProcess
    proxy: TcpProxy
    key: str


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    work = tmp_path_factory.mktemp("outage")
    with postgres_database("voicemon_outage") as direct:
        url = make_url(direct)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        cli = Cli(work, direct)
        key = cli.key(name="outage")
        relayed = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = ServerProcess({**cli.env, "VOICEMON_DATABASE_URL": relayed}, work / "serve.log")
        server.start()
        try:
            yield Outage(server, proxy, key)
        finally:
            server.stop()
            proxy.close()


@dataclass
class Load:
    """Writes and reads in a loop; every reply is kept with when it was sent and when it came back."""

    url: str
    key: str
    replies: list[tuple[float, float, str, int, Any]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    refused: list[list[dict[str, Any]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        now = int(time.time() * 1000)
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        ) as http:
            while not self.stop.is_set():
                n += 1
                batch = [
                    ev("artifact_received", f"out-{n}-{i}", now - 60_000, organization_id=ORG,
                       event_id=f"out-{n}-{i}")
                    for i in range(20)
                ]  # fmt: skip
                sent = time.monotonic()
                reply = http.post("/v1/events", json={"events": batch})
                self.replies.append((sent, time.monotonic(), "write", reply.status_code, reply.json()))
                if reply.status_code == 200:
                    self.acknowledged += [e["event_id"] for e in batch]
                else:
                    self.refused.append(batch)
                for path in ("/v1/metrics/realtime", f"/v1/events?organization_id={ORG}&limit=5"):
                    sent = time.monotonic()
                    reply = http.get(path, params={"organization_id": ORG} if "realtime" in path else None)
                    self.replies.append((sent, time.monotonic(), path, reply.status_code, reply.json()))
                time.sleep(0.02)


def test_the_database_going_away_is_503_and_service_resumes_without_a_restart(outage: Outage) -> None:
    load = Load(outage.server.url, outage.key)
    worker = threading.Thread(target=load.run)
    worker.start()
    try:
        time.sleep(1.0)
        outage.proxy.cut()
        cut_at = time.monotonic()  # from here on, every relayed connection is gone
        time.sleep(2.0)
        assert httpx.get(f"{outage.server.url}/healthz", timeout=10).status_code == 503
        restored_at = time.monotonic()
        outage.proxy.restore()
        wait_for(
            lambda: any(s == 200 and t > restored_at for t, _, _, s, _ in load.replies[-6:]), 20, "service"
        )
        time.sleep(1.0)
    finally:
        load.stop.set()
        worker.join(30)
    assert outage.server.running, "the server never stopped"

    before = [status for _, done, _, status, _ in load.replies if done < cut_at - 0.2]
    away = [(what, status, body) for sent, done, what, status, body in load.replies
            if sent > cut_at and done < restored_at]  # fmt: skip
    assert before, "traffic ran before the cut"
    assert set(before) == {200}
    assert len(away) >= 3, "the outage was seen"
    # Never a wrong answer: while the database is away, every reply says so.
    assert {status for _, status, _ in away} == {503}, away
    for _, _, body in away:
        assert body["error"]["code"] in {"storage_unavailable", "unavailable"}, body
    # In flight at the cut or after the restore: served or refused, nothing else.
    assert {status for _, _, _, status, _ in load.replies} <= {200, 503}

    # Whatever was refused is sent again; then every event is stored once and counted once.
    with httpx.Client(base_url=outage.server.url, headers={"Authorization": f"Bearer {outage.key}"}) as http:
        for batch in load.refused:
            assert http.post("/v1/events", json={"events": batch}).status_code == 200
        stored: list[str] = []
        cursor = None
        while True:
            params = {"limit": 500, "organization_id": ORG, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/events", params=params).json()
            stored += [e["event_id"] for e in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        counts = http.get("/v1/metrics/realtime", params={"organization_id": ORG}).json()["counts"]
    expected = set(load.acknowledged) | {e["event_id"] for batch in load.refused for e in batch}
    assert len(stored) == len(set(stored))
    assert set(stored) == expected
    assert counts["artifacts_received"] == len(expected)
