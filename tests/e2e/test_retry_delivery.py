"""Retry commands delivered over real HTTP to a signature-checking receiver (SPEC 9).

The receiver is an ``http.server`` on 127.0.0.1 that checks ``X-Voicemon-Signature`` against the shared
secret, can answer 500 a few times before it answers 200, and records what it got. Delivery is at least
once, so the receiver deduplicates by ``retry_id``, as a real pipeline must.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select

from tests.conftest import BACKEND, STAFF, Api, postgres_database
from tests.helpers import VOICEMON, ServerProcess, ev, free_port, wait_for
from voicemon.clock import FakeClock, SystemClock
from voicemon.domain.timeutil import MINUTE_MS, SECOND_MS, format_time
from voicemon.errors import DeliveryError
from voicemon.service import Services
from voicemon.service.retries import RetryCommand
from voicemon.service.retry_delivery import WebhookHandler
from voicemon.service.transports import SIGNATURE_HEADER, sign
from voicemon.settings import Settings
from voicemon.storage.tables import outbox, retries

SECRET = "s3cret-for-tests"


class Receiver:
    """A pipeline's webhook endpoint: verifies signatures, fails the first ``fail_first`` verified
    requests with 500, then answers 200. ``verified`` holds every verified body, ``delivered`` those
    answered 200; ``forged`` counts requests whose signature did not match."""

    def __init__(self, secret: str, fail_first: int = 0, port: int = 0) -> None:
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.verified: list[bytes] = []
        self.delivered: list[bytes] = []
        self.forged = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="test-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/retries"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(receiver.answer(body, self.headers.get(SIGNATURE_HEADER)))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def answer(self, body: bytes, signature: str | None) -> int:
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        with self._lock:
            if signature is None or not hmac.compare_digest(signature, expected):
                self.forged += 1
                return 401
            self.verified.append(body)
            if len(self.verified) <= self.fail_first:
                return 500
            self.delivered.append(body)
            return 200

    def distinct_retry_ids(self) -> set[str]:
        with self._lock:
            return {orjson.loads(b)["retry_id"] for b in self.delivered}

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def rows_of(url: str, table: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(table)))
    finally:
        engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET, fail_first=2) as r:
        yield r


@pytest.fixture
def settings(db_url: str, receiver: Receiver) -> Settings:
    return Settings(
        database_url=db_url,
        key_cache_s=0,
        retry_webhook_url=receiver.url,
        retry_webhook_secret=SecretStr(SECRET),
        retry_delivery_max_attempts=5,
        retry_backoff_base_s=1.0,
        retry_backoff_cap_s=2.0,
        retry_webhook_timeout_s=5.0,
    )


def test_receiver_refuses_a_wrong_signature(receiver: Receiver) -> None:
    """The receiver's check is real, so the signatures the tests below count as valid are valid."""
    command = RetryCommand("r-1", "a1", None, None, "full", 1, True)
    forged = WebhookHandler(receiver.url, "not-the-secret", 5.0)
    unsigned = WebhookHandler(receiver.url, None, 5.0)
    try:
        for handler in (forged, unsigned):
            with pytest.raises(DeliveryError, match="401"):
                handler(command)
    finally:
        forged.close()
        unsigned.close()
    assert receiver.forged == 2
    assert receiver.verified == []
    body = command.to_json()
    assert sign(body, SECRET) == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_delivery_backs_off_and_ends_dispatched(
    api: Api, clock: FakeClock, receiver: Receiver
) -> None:
    services = api.services
    assert isinstance(services.retry_transport, WebhookHandler)
    now = clock.now_ms()
    events = [
        ev("artifact_received", "a1", now - 5 * MINUTE_MS, organization_id="org-w", voice_note_id="vn-9"),
        ev(
            "draft_generation_failed",
            "a1",
            now - 4 * MINUTE_MS,
            organization_id="org-w",
            error_message="llm down",
        ),
    ]
    assert api.call("POST", "/v1/events", json={"events": events}).json()["accepted"] == 2
    r = api.call("POST", "/v1/artifacts/a1/retries", json={"stage": "draft_generation", "reason": "llm back"})
    assert r.status_code == 202, r.text
    retry_id = r.json()["retry_id"]

    passes = 0
    while api.call("GET", "/v1/artifacts/a1/retries").json()["items"][0]["status"] == "pending":
        assert passes < 10, "not delivered within 10 dispatcher passes"
        services.dispatcher.run_once()
        clock.advance(2 * SECOND_MS)
        passes += 1

    assert receiver.forged == 0
    assert len(receiver.verified) == 3  # 500, 500, 200
    assert len(set(receiver.verified)) == 1
    assert receiver.distinct_retry_ids() == {retry_id}
    assert orjson.loads(receiver.delivered[0]) == {
        "retry_id": retry_id,
        "artifact_id": "a1",
        "voice_note_id": "vn-9",
        "organization_id": "org-w",
        "stage": "draft_generation",
        "attempt": 1,
        "full_cleanup": False,
    }
    [record] = api.call("GET", "/v1/artifacts/a1/retries").json()["items"]
    assert record["status"] == "dispatched"
    assert record["dispatched_at"] is not None
    [row] = rows_of(services.settings.database_url, outbox)
    assert (row.status, row.attempts) == ("delivered", 3)
    # Delivered means settled: later passes send nothing more.
    clock.advance(MINUTE_MS)
    assert services.dispatcher.run_once() == 0
    assert len(receiver.verified) == 3


def test_dispatcher_thread_delivers_on_a_real_clock(settings: Settings, receiver: Receiver) -> None:
    fast = settings.model_copy(
        update={"retry_backoff_base_s": 0.05, "retry_backoff_cap_s": 0.1, "dispatcher_poll_s": 0.05}
    )
    services = Services(fast, SystemClock())
    services.start(run_dispatcher=True)
    try:
        now = services.clock.now_ms()
        events = [
            ev("artifact_received", "t1", now - MINUTE_MS, organization_id="org-t"),
            ev("transcription_failed", "t1", now - 1000, error_message="asr down"),
        ]
        assert services.ingest_blocking(events, STAFF).accepted == 2
        record = services.retries.request(STAFF, "t1", "transcription", "asr back")
        wait_for(lambda: receiver.delivered != [], 10, "the webhook to be delivered")
        wait_for(
            lambda: services.retries.list(STAFF, "t1")[0].status.value == "dispatched",
            5,
            "the retry to be recorded dispatched",
        )
    finally:
        services.stop()
    assert receiver.distinct_retry_ids() == {record.retry_id}
    assert len(receiver.verified) >= 3
    assert receiver.forged == 0


# --- a real server process, killed between commit and delivery --------------------------------------------


@pytest.fixture
def process_db_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own for the server processes: a SQLite file, or a new PostgreSQL database."""
    if BACKEND != "postgresql":
        yield f"sqlite:///{tmp_path}/server.db"
        return
    with postgres_database("voicemon_e2e") as url:
        yield url


def test_retry_committed_before_a_crash_is_delivered_after_restart(
    process_db_url: str, tmp_path: Path
) -> None:
    hook_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "VOICEMON_DATABASE_URL": process_db_url,
        "VOICEMON_RETRY_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/retries",
        "VOICEMON_RETRY_WEBHOOK_SECRET": SECRET,
        "VOICEMON_RETRY_BACKOFF_BASE_S": "0.2",
        "VOICEMON_RETRY_BACKOFF_CAP_S": "0.5",
        "VOICEMON_RETRY_DELIVERY_MAX_ATTEMPTS": "1000",
        "VOICEMON_RETRY_WEBHOOK_TIMEOUT_S": "2",
        # A kill while an entry is claimed leaves it leased; keep the lease short so the restarted server
        # takes it over within the test's wait (the default is 60 s).
        "VOICEMON_OUTBOX_LEASE_S": "5",
    }
    # Only db upgrade and the servers make the schema; keys create needs it there.
    subprocess.run([str(VOICEMON), "db", "upgrade"], env=env, capture_output=True, timeout=60, check=True)
    created = subprocess.run(
        [str(VOICEMON), "keys", "create", "--role", "staff"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    log = tmp_path / "server.log"

    servers: list[ServerProcess] = []
    try:
        first = ServerProcess(env, log, api_port)
        servers.append(first)
        first.start(60)
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as client:
            now = int(time.time() * 1000)
            events = [
                {
                    "event_type": "artifact_received",
                    "artifact_id": "p1",
                    "timestamp": format_time(now - 60_000),
                },
                {"event_type": "transcription_failed", "artifact_id": "p1", "timestamp": format_time(now)},
            ]
            assert client.post("/v1/events", json={"events": events}).json()["accepted"] == 2
            r = client.post("/v1/artifacts/p1/retries", json={"stage": "full", "reason": "crash test"})
            assert r.status_code == 202, r.text
            retry_id = r.json()["retry_id"]
        # The first server tried to deliver and failed (nothing listens yet) before it dies.
        wait_for(lambda: rows_of(process_db_url, outbox)[0].last_error is not None, 10, "a failed attempt")
        first.kill()
        [entry] = rows_of(process_db_url, outbox)
        [stored] = rows_of(process_db_url, retries)
        assert (entry.status, stored.status) == ("pending", "pending")

        with Receiver(SECRET, port=hook_port) as receiver:
            second = ServerProcess(env, log, api_port)
            servers.append(second)
            second.start(60)
            wait_for(lambda: receiver.delivered != [], 20, "delivery after the restart")
            with httpx.Client(base_url=second.url, headers=headers, timeout=10) as client:

                def dispatched() -> bool:
                    items = client.get("/v1/artifacts/p1/retries").json()["items"]
                    return bool(items[0]["status"] == "dispatched")

                wait_for(dispatched, 10, "the retry to be recorded dispatched")
                [record] = client.get("/v1/artifacts/p1/retries").json()["items"]
        assert receiver.forged == 0
        assert receiver.distinct_retry_ids() == {retry_id}
        assert record["retry_id"] == retry_id
        assert record["attempt"] == 1
        assert orjson.loads(receiver.delivered[0])["full_cleanup"] is True
    finally:
        for server in servers:
            server.kill()
