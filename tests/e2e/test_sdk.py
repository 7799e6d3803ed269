"""The SDK (SPEC 11) against a real ``voicemon serve`` process.

One server process serves the module (a SQLite file, or a PostgreSQL database made for the module). Some
tests stop, kill and restart it; the ``server`` fixture brings it back up before each test. Every test
logs under an organization of its own, so the per-organization realtime counters and event lists it
checks hold exactly its own events.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import process_database
from tests.helpers import VOICEMON, ServerProcess, free_port, wait_for
from voicemon import Client
from voicemon.domain.access import SYSTEM
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import migrate


def dead_url() -> str:
    """An address where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with process_database(tmp_path_factory, "sdk") as url:
        yield url


@pytest.fixture(scope="module")
def process(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {**os.environ, "VOICEMON_DATABASE_URL": database_url}
    server = ServerProcess(env, tmp_path_factory.mktemp("sdk-log") / "server.log")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def keys(process: ServerProcess, database_url: str) -> dict[str, str]:
    """An ingest key made by the CLI and a staff key for reading. The schema is migrated here first, so
    that the CLI and the server, started side by side, find it ready."""
    services = Services(Settings(database_url=database_url))
    try:
        migrate.upgrade(services.db)
        staff = services.keys.create(SYSTEM, "staff", None, "sdk-test-reader").secret
    finally:
        services.db.dispose()
    cli = subprocess.Popen(
        [str(VOICEMON), "keys", "create", "--role", "ingest", "--name", "sdk-test"],
        env=process.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.start()
        out, errors = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    assert cli.returncode == 0, errors
    ingest = out.strip().splitlines()[-1]
    assert ingest.startswith("vm_"), out
    return {"ingest": ingest, "staff": staff}


@pytest.fixture
def server(process: ServerProcess, keys: dict[str, str]) -> ServerProcess:
    """The module's server, up (restarted if an earlier test left it down)."""
    if not process.running:
        process.start()
    return process


@pytest.fixture
def org() -> str:
    return f"org-{secrets.token_hex(6)}"


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients made by a test are closed after it, even when it fails."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close(timeout=1)


@pytest.fixture
def reader(server: ServerProcess, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {keys['staff']}"}, timeout=30
    ) as http:
        yield http


class Recording(httpx.BaseTransport):
    """Forwards to a real ``httpx.HTTPTransport`` and records each request: its batch size and how it
    ended (``"ok"`` with the reply body, or the error). ``after_reply`` may replace a reply by raising."""

    def __init__(self, after_reply: Callable[[int, httpx.Response], None] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.after_reply = after_reply
        self.lock = threading.Lock()
        self.batches: list[int] = []
        self.outcomes: list[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        size = len(json.loads(request.read())["events"])
        with self.lock:
            self.batches.append(size)
            n = len(self.batches)
        try:
            response = self.inner.handle_request(request)
            response.read()
            if self.after_reply is not None:
                self.after_reply(n, response)
        except httpx.HTTPError as exc:
            with self.lock:
                self.outcomes.append(exc)
            raise
        with self.lock:
            self.outcomes.append(("ok", response.json()))
        return response

    @property
    def failures(self) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes if isinstance(o, Exception))

    def replies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [o[1] for o in self.outcomes if isinstance(o, tuple)]

    def close(self) -> None:
        self.inner.close()


def stored_events(reader: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    """Every stored event matching ``filters``, following the cursor."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500, **filters}
    for _ in range(1000):
        r = reader.get("/v1/events", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["items"])
        if body["next_cursor"] is None:
            return out
        params["cursor"] = body["next_cursor"]
    pytest.fail("the event list did not end")


def realtime_counts(reader: httpx.Client, org: str) -> dict[str, Any]:
    r = reader.get("/v1/metrics/realtime", params={"organization_id": org})
    assert r.status_code == 200, r.text
    counts: dict[str, Any] = r.json()["counts"]
    return counts


def log_received(client: Client, org: str, n: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    for artifact_id in ids:
        client.log_event("artifact_received", artifact_id=artifact_id, organization_id=org)
    return ids


def assert_stored_once(reader: httpx.Client, org: str, artifact_ids: list[str]) -> None:
    events = stored_events(reader, organization_id=org)
    assert len(events) == len(artifact_ids)
    assert len({e["event_id"] for e in events}) == len(artifact_ids)
    assert sorted(e["artifact_id"] for e in events) == sorted(artifact_ids)
    counts = realtime_counts(reader, org)
    assert counts["artifacts_received"] == len(artifact_ids)


# --- batching -------------------------------------------------------------------------------------------


def test_many_events_go_in_few_requests_and_all_are_stored(
    server: ServerProcess, keys: dict[str, str], reader: httpx.Client, org: str, clients: list[Client]
) -> None:
    transport = Recording()
    client = Client(server.url, keys["ingest"], batch_size=500, flush_interval_s=5, transport=transport)
    clients.append(client)
    artifact_ids = log_received(client, org, 2000, "batch")

    assert client.flush(30)

    assert sum(transport.batches) == 2000
    assert len(transport.batches) <= 6, transport.batches
    assert max(transport.batches) <= 500
    assert transport.failures == 0
    stats = client.stats
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped, stats.pending) == (2000, 2000, 0, 0, 0)
    assert_stored_once(reader, org, artifact_ids)


# --- outages --------------------------------------------------------------------------------------------


def test_sending_resumes_after_the_server_died_and_nothing_is_counted_twice(
    server: ServerProcess, keys: dict[str, str], reader: httpx.Client, org: str, clients: list[Client]
) -> None:
    """The server commits a first batch and dies before its reply reaches the client (the transport kills
    it once the reply arrived, then reports a lost connection). More events are logged while it is down.
    After a restart the client resends the first batch, which the server recognises as duplicates, and
    sends the rest: each event is stored and counted exactly once."""

    def kill_before_the_ack(n: int, response: httpx.Response) -> None:
        if n == 1:
            assert response.status_code == 200
            server.kill()
            raise httpx.ReadError("connection lost before the reply")

    transport = Recording(after_reply=kill_before_the_ack)
    client = Client(
        server.url,
        keys["ingest"],
        batch_size=120,
        flush_interval_s=60,
        max_backoff_s=0.3,
        transport=transport,
    )
    clients.append(client)
    first = log_received(client, org, 120, "acked")  # exactly one batch: this wakes the sender
    wait_for(lambda: transport.failures >= 2, 15, "the lost reply and a refused resend")
    assert not server.running
    during = log_received(client, org, 250, "down")
    wait_for(lambda: transport.failures >= 4, 15, "more refused attempts")
    assert not client.flush(0.2)
    assert (client.stats.sent, client.stats.pending) == (0, 370)

    server.start()
    assert client.flush(30)

    assert transport.batches[0] == 120
    replies = transport.replies()
    assert replies[0] == {"accepted": 0, "duplicates": 120, "rejected": []}
    assert sum(r["accepted"] for r in replies[1:]) == 250
    assert all(r["duplicates"] == 0 and r["rejected"] == [] for r in replies[1:])
    stats = client.stats
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped, stats.pending) == (370, 370, 0, 0, 0)
    assert_stored_once(reader, org, first + during)


# --- bounded queue and bounded close -------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_new_events() -> None:
    client = Client(dead_url(), "vm_unused", batch_size=1000, flush_interval_s=3600, max_queue=10)
    try:
        for i in range(25):
            client.log_event("artifact_received", artifact_id=f"q-{i}")
        stats = client.stats
        assert (stats.queued, stats.dropped, stats.pending, stats.sent) == (10, 15, 10, 0)
    finally:
        client.close(timeout=0.5)
    assert client.stats.dropped == 25
    assert client.stats.pending == 0


def test_close_against_a_dead_address_is_bounded_and_counts_the_unsent() -> None:
    client = Client(dead_url(), "vm_unused", batch_size=100, flush_interval_s=0.05)
    for i in range(250):
        client.log_event("artifact_received", artifact_id=f"c-{i}")
    started = time.monotonic()
    client.close(timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    stats = client.stats
    assert (stats.queued, stats.sent, stats.dropped, stats.pending) == (250, 0, 250, 0)
    # Closed: later events are dropped and counted, not raised.
    client.log_event("artifact_received", artifact_id="after-close")
    assert client.stats.dropped == 251
    client.close(timeout=1)  # twice is fine


def test_close_during_a_long_backoff_is_bounded_and_counts_the_batch_in_flight() -> None:
    """After some failed attempts the sender sleeps seconds between two of them; close must not wait
    that sleep out, and the batch it was holding counts as dropped by the time close returns."""
    transport = Recording()
    client = Client(dead_url(), "vm_unused", batch_size=50, flush_interval_s=0.01, transport=transport)
    for i in range(50):
        client.log_event("artifact_received", artifact_id=f"b-{i}")
    # Attempt n is followed by a pause of 0.05 * 2**n to 0.1 * 2**n seconds: after the 5th, 1.6 to 3.2 s.
    wait_for(lambda: transport.failures >= 5, 10, "five failed attempts")
    started = time.monotonic()
    client.close(timeout=0.2)
    elapsed = time.monotonic() - started
    assert elapsed < 1.2
    stats = client.stats
    assert (stats.sent, stats.dropped, stats.pending) == (0, 50, 0)


# --- stage() ----------------------------------------------------------------------------------------------


def by_type(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {e["event_type"]: e for e in events}
    assert len(out) == len(events), [e["event_type"] for e in events]
    return out


def timeline(reader: httpx.Client, artifact_id: str) -> dict[str, Any]:
    r = reader.get(f"/v1/artifacts/{artifact_id}")
    assert r.status_code == 200, r.text
    detail: dict[str, Any] = r.json()
    return detail


def ms_of(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp() * 1000


def test_stage_times_the_block_and_carries_metadata_set_inside(
    server: ServerProcess, keys: dict[str, str], reader: httpx.Client, org: str, clients: list[Client]
) -> None:
    client = Client(server.url, keys["ingest"], flush_interval_s=0.05)
    clients.append(client)
    client.log_event("artifact_received", artifact_id="st-1", organization_id=org)
    with client.stage("claims_extraction", artifact_id="st-1", organization_id=org) as s:
        time.sleep(0.25)
        s.set(claim_count=3, ai_model="llm-extract-mini")
        s.set(ai_cost_usd=0.01)
    with client.stage("entity_resolution", artifact_id="st-1", organization_id=org) as s:
        s.completed_type = "entity_needs_disambiguation"
        s.set(entity_count=2, disambiguation_count=1)
    assert client.flush(20)
    assert client.stats.sent == 5

    detail = timeline(reader, "st-1")
    types = [e["event_type"] for e in detail["timeline"]]
    assert types == [
        "artifact_received",
        "claims_extraction_started",
        "claims_extracted",
        "entity_resolution_started",
        "entity_needs_disambiguation",
    ]
    events = by_type(detail["timeline"])
    started, done = events["claims_extraction_started"], events["claims_extracted"]
    assert started["organization_id"] == done["organization_id"] == org
    assert started["duration_ms"] is None
    assert 250 <= done["duration_ms"] < 750
    # The completion is stamped when the block ends, the start when it begins.
    gap_ms = ms_of(done["timestamp"]) - ms_of(started["timestamp"])
    assert abs(gap_ms - done["duration_ms"]) <= 50
    assert done["metadata"] == {"claim_count": 3, "ai_model": "llm-extract-mini", "ai_cost_usd": 0.01}
    assert events["entity_needs_disambiguation"]["metadata"] == {"entity_count": 2, "disambiguation_count": 1}
    assert detail["status"] == "processing"


def test_stage_logs_the_failure_and_reraises(
    server: ServerProcess, keys: dict[str, str], reader: httpx.Client, org: str, clients: list[Client]
) -> None:
    client = Client(server.url, keys["ingest"], flush_interval_s=0.05)
    clients.append(client)
    client.log_event("artifact_received", artifact_id="st-fail", organization_id=org)

    def generate_drafts() -> None:
        with client.stage("draft_generation", artifact_id="st-fail", organization_id=org) as s:
            s.set(ai_model="llm-draft-small")
            time.sleep(0.05)
            raise RuntimeError("model returned junk")

    with pytest.raises(RuntimeError, match="model returned junk"):
        generate_drafts()
    assert client.flush(20)

    detail = timeline(reader, "st-fail")
    assert [e["event_type"] for e in detail["timeline"]] == [
        "artifact_received",
        "draft_generation_started",
        "draft_generation_failed",
    ]
    failed = by_type(detail["timeline"])["draft_generation_failed"]
    assert failed["error_code"] == "RuntimeError"
    assert failed["error_message"] == "model returned junk"
    assert 50 <= failed["duration_ms"] < 550
    assert failed["metadata"] == {"ai_model": "llm-draft-small"}
    assert (detail["status"], detail["failed_stage"], detail["last_error_code"]) == (
        "failed",
        "draft_generation",
        "RuntimeError",
    )
    assert realtime_counts(reader, org)["failures"] == 1


def test_stage_as_a_decorator_times_each_call(
    server: ServerProcess, keys: dict[str, str], reader: httpx.Client, org: str, clients: list[Client]
) -> None:
    client = Client(server.url, keys["ingest"], flush_interval_s=0.05)
    clients.append(client)

    @client.stage("transcription", artifact_id="st-dec", organization_id=org)
    def transcribe(seconds: float) -> str:
        time.sleep(seconds)
        return f"slept {seconds}"

    @client.stage("transcription", artifact_id="st-dec", organization_id=org)
    def broken() -> None:
        raise ConnectionError

    assert transcribe.__name__ == "transcribe"
    assert transcribe(0.3) == "slept 0.3"
    assert transcribe(0.02) == "slept 0.02"
    with pytest.raises(ConnectionError):
        broken()
    assert client.flush(20)

    events = timeline(reader, "st-dec")["timeline"]
    assert [e["event_type"] for e in events] == [
        "transcription_started",
        "transcription_completed",
        "transcription_started",
        "transcription_completed",
        "transcription_started",
        "transcription_failed",
    ]
    assert all(e["organization_id"] == org for e in events)
    first, second = events[1]["duration_ms"], events[3]["duration_ms"]
    # Each call is timed from its own start, not from the decoration or the first call.
    assert 300 <= first < 800
    assert 20 <= second < 300
    # An exception without a message is reported by its type.
    assert (events[5]["error_code"], events[5]["error_message"]) == ("ConnectionError", "ConnectionError")


def test_unknown_stage_is_refused_when_the_scope_is_made() -> None:
    client = Client(dead_url(), "vm_unused", flush_interval_s=3600)
    try:
        with pytest.raises(ValueError, match="stage must be one of"):
            client.stage("ingestion", artifact_id="x")
    finally:
        client.close(timeout=0.2)


# --- log_event never raises -------------------------------------------------------------------------------


def test_log_event_never_raises_and_counts_what_it_cannot_send(
    server: ServerProcess, keys: dict[str, str], reader: httpx.Client, org: str, clients: list[Client]
) -> None:
    """Events that cannot be encoded as JSON (an arbitrary object, NaN) are dropped and counted, one by
    one: the rest of their batch is sent and the sender keeps going. Events the server refuses are
    counted as rejected."""
    transport = Recording()
    client = Client(server.url, keys["ingest"], flush_interval_s=60, transport=transport)
    clients.append(client)
    client.log_event("artifact_received", artifact_id="ok-1", organization_id=org)
    client.log_event(
        "artifact_received", artifact_id="bad-obj", organization_id=org, metadata={"x": object()}
    )
    client.log_event(
        "transcription_completed", artifact_id="bad-nan", organization_id=org, duration_ms=float("nan")
    )
    client.log_event("not_an_event_type", artifact_id="bad-type", organization_id=org)
    client.log_event("artifact_received", artifact_id="ok-2", organization_id=org)
    assert client.flush(20)

    stats = client.stats
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped, stats.pending) == (5, 2, 1, 2, 0)
    assert transport.batches == [3]
    assert sorted(e["artifact_id"] for e in stored_events(reader, organization_id=org)) == ["ok-1", "ok-2"]

    # The sender survived: later events are still delivered.
    client.log_event("artifact_received", artifact_id="ok-3", organization_id=org)
    assert client.flush(20)
    assert client.stats.sent == 3
    assert realtime_counts(reader, org)["artifacts_received"] == 3


def test_refused_batches_are_dropped_and_counted(
    server: ServerProcess, org: str, clients: list[Client]
) -> None:
    """A bad key is not worth retrying: the batch is dropped and counted, not resent forever."""
    transport = Recording()
    client = Client(server.url, "vm_not_a_key", flush_interval_s=60, transport=transport)
    clients.append(client)
    for i in range(7):
        client.log_event("artifact_received", artifact_id=f"refused-{i}", organization_id=org)
    assert client.flush(20)
    assert len(transport.batches) == 1
    stats = client.stats
    assert (stats.sent, stats.dropped, stats.pending) == (0, 7, 0)


# --- cost of log_event ----------------------------------------------------------------------------------


def test_log_event_is_cheap() -> None:
    """The median cost of one call, with a sender that stays idle (timing goals live in bench/; this
    bound only catches an accidental order-of-magnitude regression)."""
    client = Client(dead_url(), "vm_unused", batch_size=1000, flush_interval_s=3600, max_queue=1_000_000)
    costs_ns: list[int] = []
    try:
        clock = time.perf_counter_ns
        for i in range(20_000):
            t0 = clock()
            client.log_event(
                "transcription_completed",
                artifact_id=f"cost-{i}",
                organization_id="org-cost",
                duration_ms=1234.5,
                metadata={"confidence_score": 0.9},
            )
            costs_ns.append(clock() - t0)
    finally:
        client.close(timeout=0.5)
    median_us = statistics.median(costs_ns) / 1000
    print(f"\nlog_event median cost over {len(costs_ns)} calls: {median_us:.2f} µs")
    assert client.stats.queued == 20_000
    assert median_us < 200
