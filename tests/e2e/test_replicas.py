"""Replicas (SPEC 19): two ``voicemon serve`` processes and one ``voicemon worker`` on one PostgreSQL,
through a simulated day. Every process runs the scheduler and delivers the outbox.

Time is one clock for all three processes: a file the test writes, which each process reads as its
system clock (a ``sitecustomize`` on the processes' path; nothing in voicemon knows). The day goes by in
steps of 20 minutes; at each step the test ingests through both servers, then waits until the ticks due
at that time have run. At 10:00 it asks for a retry of every failed artifact on both servers at once.

Checked: each job tick due during the day ran exactly once (and only those), and every run succeeded;
the runs were shared among the processes; every acknowledged event is stored once; of each pair of
simultaneous retry requests one was accepted and one refused, and each accepted retry reached the
pipeline's webhook exactly once; the failure-rate alert of the failing organization opened once and
resolved once.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from tests.api.cli_runner import Cli
from tests.conftest import BACKEND, process_database
from tests.helpers import VOICEMON, ServerProcess, ev, serve_in_thread, soaked, wait_for
from voicemon.domain.schedule import previous_fire
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, parse_time
from voicemon.settings import Settings

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="replicas share a PostgreSQL database")

START_MS = parse_time("2026-12-07T00:05:00Z")  # a Monday
STEP_MS = 20 * MINUTE_MS
STEPS = soaked(72, 3 * 72)  # 24 hours (three days under make soak)
RETRY_STEP = 30  # 10:05
FAILING_HOURS = range(6, 10)  # org-f fails half its notes from 06:00 to 10:00

CLOCK_HOOK = """
import os
_path = os.environ.get("VOICEMON_TEST_CLOCK_FILE")
if _path:
    import voicemon.clock

    def _shared_now_ms(self):
        with open(_path, "rb") as f:
            return int(f.read())

    voicemon.clock.SystemClock.now_ms = _shared_now_ms
"""

JOBS = {
    "aggregate-minutes": Settings().schedule_aggregate_minutes,
    "aggregate-hourly": Settings().schedule_aggregate_hourly,
    "aggregate-daily": Settings().schedule_aggregate_daily,
    "cleanup-snapshots": Settings().schedule_cleanup_snapshots,
    "cleanup-events": Settings().schedule_cleanup_events,
    "evaluate-alerts": Settings().schedule_evaluate_alerts,
    "partition-events": Settings().schedule_partition_events,
}


class Receiver:
    """The pipeline's retry webhook: records every delivery."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        with self._lock:
            self.deliveries.append((headers[b"x-voicemon-delivery"].decode(), orjson.loads(body)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def cluster(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CLOCK_HOOK)
    clock = tmp_path / "clock"
    clock.write_text(str(START_MS))
    receiver = Receiver()
    with process_database(tmp_path_factory, "replicas") as url, serve_in_thread(receiver) as hook_url:
        cli = Cli(tmp_path, url)
        key = cli.key(name="replicas")
        env = {
            **cli.env,
            "PYTHONPATH": str(hook),
            "VOICEMON_TEST_CLOCK_FILE": str(clock),
            "VOICEMON_KEY_CACHE_S": "600",
            "VOICEMON_SCHEDULER_POLL_S": "0.05",
            "VOICEMON_DISPATCHER_POLL_S": "0.05",
            "VOICEMON_RETRY_WEBHOOK_URL": hook_url,
        }
        servers = [ServerProcess(env, tmp_path / f"serve-{i}.log", scheduler=True) for i in range(2)]
        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [str(VOICEMON), "worker"], env=env, stdout=worker_log, stderr=subprocess.STDOUT
        )
        try:
            for server in servers:
                server.start()
            engine = create_engine(url)
            yield {
                "servers": servers,
                "key": key,
                "clock": clock,
                "engine": engine,
                "receiver": receiver,
                "worker": worker,
            }
            engine.dispose()
        finally:
            for server in servers:
                server.stop()
            worker.terminate()
            worker.wait(20)
            worker_log.close()


def _journeys(step: int, now_ms: int) -> list[dict[str, Any]]:
    """Ten notes of org-a and ten of org-f, received and ended within the step's 20 minutes."""
    hour = (now_ms // HOUR_MS) % 24
    out = []
    for org in ("org-a", "org-f"):
        for i in range(10):
            aid = f"{org}-{step}-{i}"
            t = now_ms - STEP_MS + i * MINUTE_MS
            fails = org == "org-f" and hour in FAILING_HOURS and i % 2 == 0
            end = "artifact_failed" if fails else "artifact_completed"
            out += [
                ev("artifact_received", aid, t, organization_id=org, event_id=f"{aid}-r"),
                ev(end, aid, t + 30_000, organization_id=org, event_id=f"{aid}-e"),
            ]
    return out


def _ended_ticks(engine: Any, ticks: set[tuple[str, int]]) -> bool:
    with engine.connect() as conn:
        done = set(
            conn.execute(
                text(
                    "SELECT name, scheduled_for_ms FROM job_runs"
                    " WHERE trigger = 'schedule' AND status IN ('succeeded', 'failed')"
                )
            ).all()
        )
    return ticks <= done


def test_two_servers_and_a_worker_share_one_database_through_a_day(cluster: dict[str, Any]) -> None:
    servers: list[ServerProcess] = cluster["servers"]
    engine = cluster["engine"]
    headers = {"Authorization": f"Bearer {cluster['key']}"}
    clients = [httpx.Client(base_url=s.url, headers=headers, timeout=30) for s in servers]
    due: set[tuple[str, int]] = set()
    sent: set[str] = set()
    retry_replies: list[tuple[int, int]] = []
    receiver: Receiver = cluster["receiver"]
    try:
        for step in range(STEPS):
            now = START_MS + step * STEP_MS
            cluster["clock"].write_text(str(now))
            batch = _journeys(step, now)
            half = len(batch) // 2
            for client, part in ((clients[0], batch[:half]), (clients[1], batch[half:])):
                reply = client.post("/v1/events", json={"events": part})
                assert reply.status_code == 200, reply.text
                assert reply.json()["rejected"] == [], reply.text
            sent |= {e["event_id"] for e in batch}
            ticks = {(name, previous_fire(schedule, now)) for name, schedule in JOBS.items()}
            due |= ticks
            wait_for(lambda t=ticks: _ended_ticks(engine, t), 60, f"the ticks due at step {step}", 0.05)
            if step == RETRY_STEP:
                retry_replies = _retry_every_failed_artifact_on_both(clients)
                # The clock stands still until every delivery is recorded: an entry whose delivery
                # outlives its lease (in clock time) is taken over and sent again, by design (the
                # receiver drops it by its delivery id). Moving the clock 20 minutes between a
                # receiver's reply and the sender's record would be such a delivery.
                wait_for(lambda: _retries_settled(engine), 30, "the retries to be delivered and recorded")
    finally:
        for client in clients:
            client.close()

    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT name, scheduled_for_ms, status, owner, error FROM job_runs WHERE trigger = 'schedule'"
            )
        ).all()
        stored = Counter(r[0] for r in conn.execute(text("SELECT event_id FROM events")))
        alerts = conn.execute(text("SELECT rule, scope, state FROM alerts")).all()
        transitions = Counter(
            (rule, scope, kind)
            for rule, scope, kind in conn.execute(
                text("SELECT a.rule, a.scope, t.kind FROM alert_transitions t JOIN alerts a USING (alert_id)")
            )
        )

    # Each due tick ran once, on one of the three processes, and succeeded.
    per_tick = Counter((name, at) for name, at, *_ in runs)
    assert set(per_tick) == due
    assert max(per_tick.values()) == 1
    assert [(n, e) for n, _, status, _, e in runs if status != "succeeded"] == []
    assert len({owner for *_, owner, _ in runs}) >= 2, "the runs were not shared"
    assert Counter(name for name, _ in due)["aggregate-hourly"] == 25

    # Every acknowledged event once (and the retry events the servers logged themselves).
    assert sent <= set(stored)
    assert max(stored.values()) == 1

    # One of each pair of simultaneous requests was accepted; each accepted retry was delivered once.
    assert retry_replies
    assert all(sorted(pair) == [202, 409] for pair in retry_replies), retry_replies
    accepted = [r for pair in retry_replies for r in pair if r == 202]
    delivered = Counter(body["retry_id"] for _, body in receiver.deliveries)
    assert len(delivered) == len(accepted)
    assert max(delivered.values()) == 1
    assert len({delivery for delivery, _ in receiver.deliveries}) == len(receiver.deliveries)

    # Each alert fired once, whichever process evaluated; the platform's failure rate (org-f failing
    # half its notes for four hours) fired and resolved once.
    assert Counter((rule, scope) for rule, scope, _ in alerts) == Counter(
        {(rule, scope): 1 for rule, scope, _ in alerts}
    )
    assert ("failure_rate", "", "resolved") in alerts
    assert {n for (_, _, kind), n in transitions.items() if kind in {"fired", "resolved"}} == {1}
    assert transitions["failure_rate", "", "resolved"] == 1


def _retries_settled(engine: Any) -> bool:
    with engine.connect() as conn:
        kinds = conn.execute(
            text("SELECT count(*), count(finished_ms) FROM outbox WHERE kind = 'retry'")
        ).one()
    return bool(kinds[0] > 0 and kinds[0] == kinds[1])


def _retry_every_failed_artifact_on_both(clients: list[httpx.Client]) -> list[tuple[int, int]]:
    failed = clients[0].get("/v1/artifacts", params={"status": "failed", "limit": 100})
    assert failed.status_code == 200, failed.text
    ids = [a["artifact_id"] for a in failed.json()["items"]]
    assert ids, "no failed artifact to retry"
    body = {"stage": "full", "reason": "replica test"}

    def ask(client: httpx.Client, artifact_id: str) -> int:
        return client.post(f"/v1/artifacts/{artifact_id}/retries", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        pairs = [(pool.submit(ask, clients[0], aid), pool.submit(ask, clients[1], aid)) for aid in ids]
        return [(a.result(), b.result()) for a, b in pairs]
