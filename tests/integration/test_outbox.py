"""One outbox for every delivery (SPEC 15), on both databases.

Kinds other than ``retry`` are registered here by the tests, as the alert channels will be. Delivery is
driven by hand (``dispatcher.run_once`` and the fake clock), except in the lane test, which runs the
dispatcher's threads and synchronises on events, never on sleeps.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, select

from tests.conftest import STAFF
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from voicemon.service import Services
from voicemon.service.dispatch import CLAIM_BATCH, DeliveryPolicy, Outcome, delivered
from voicemon.service.retention import Retention
from voicemon.service.retries import RetryCommand
from voicemon.service.retry_delivery import WebhookHandler
from voicemon.service.transports import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    CallableTransport,
    Delivery,
    DeliveryError,
    RecordingTransport,
    Transport,
    WebhookTransport,
    sign,
)
from voicemon.settings import Settings
from voicemon.storage import outbox as outbox_store
from voicemon.storage.outbox import OutboxEntry, OutboxStatus
from voicemon.storage.tables import outbox

SECRET = "outbox-secret"
PATIENT = DeliveryPolicy(max_attempts=3, backoff_base_ms=SECOND_MS, backoff_cap_ms=4 * SECOND_MS)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Small cleanup batches, so retention drains the outbox over several transactions."""
    return Settings(database_url=db_url, key_cache_s=0, cleanup_batch_rows=2)


class Kind:
    """A registered kind as the alert channels will be: the entry's payload is the body, sent through
    ``transport``; giving up is recorded in ``given_up`` and, when ``follow_up`` is set, as a new
    outbox entry of that kind written in the give-up's own transaction (raising after it when ``fail``)."""

    def __init__(self, transport: Transport | None, policy: DeliveryPolicy = PATIENT) -> None:
        self.transport = transport
        self.policy = policy
        self.given_up: list[tuple[str, str]] = []
        self.follow_up: str | None = None
        self.fail = False

    def deliver(self, entry: OutboxEntry) -> Outcome:
        if self.transport is None:
            raise DeliveryError("no transport")
        self.transport.send(Delivery(entry.delivery_id, entry.kind, entry.payload.encode()))
        return delivered()

    def give_up(self, conn: Connection, entry: OutboxEntry, error: str, now_ms: int) -> None:
        self.given_up.append((entry.ref_id, error))
        if self.follow_up is not None:
            outbox_store.enqueue(conn, self.follow_up, entry.ref_id, "{}", now_ms)
        if self.fail:
            raise RuntimeError("give-up failed")


class Blocking:
    """A receiver that hangs: each send waits until ``release`` is set (as a webhook waits its timeout)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.delivered: list[Delivery] = []

    def send(self, delivery: Delivery) -> None:
        self.entered.set()
        if not self.release.wait(120):
            raise DeliveryError("never released")
        self.delivered.append(delivery)


def enqueue(services: Services, kind: str, ref_id: str, payload: str = '{"n": 1}') -> None:
    with services.db.write() as conn:
        outbox_store.enqueue(conn, kind, ref_id, payload, services.clock.now_ms())


def rows(services: Services, kind: str | None = None) -> list[Any]:
    query = select(outbox).order_by(outbox.c.outbox_id)
    if kind is not None:
        query = query.where(outbox.c.kind == kind)
    with services.db.read() as conn:
        return list(conn.execute(query))


def entry_of(row: Any) -> OutboxEntry:
    return OutboxEntry(row.outbox_id, row.kind, row.ref_id, row.payload, row.attempts, row.created_ms)


def failed_artifact_with_retry(services: Services, clock: FakeClock, artifact_id: str = "a1") -> str:
    now = clock.now_ms()
    events = [
        ev("artifact_received", artifact_id, now - 10 * MINUTE_MS, organization_id="org-o"),
        ev("transcription_failed", artifact_id, now - 8 * MINUTE_MS, organization_id="org-o"),
    ]
    assert services.ingest_blocking(events, STAFF).accepted == 2
    return services.retries.request(STAFF, artifact_id, "transcription", "ops", "org-o").retry_id


# --- kinds ------------------------------------------------------------------------------------------------


def test_an_entry_of_an_unknown_kind_waits_without_blocking_retries(
    services: Services, clock: FakeClock
) -> None:
    """Not decoded as a retry, not tried, not dead-lettered: it waits for a process that knows its kind,
    and the retry written after it is delivered meanwhile."""
    enqueue(services, "alert.slack", "alert-1", '{"text": "not a retry command"}')
    received: list[RetryCommand] = []
    services.set_retry_handler(received.append)
    retry_id = failed_artifact_with_retry(services, clock)

    assert services.dispatcher.run_once() == 1
    assert [c.retry_id for c in received] == [retry_id]
    clock.advance(HOUR_MS)
    assert services.dispatcher.run_once() == 0
    [waiting] = rows(services, "alert.slack")
    assert (waiting.status, waiting.attempts, waiting.last_error) == ("pending", 0, None)

    # A process that knows the kind delivers it, once.
    slack = RecordingTransport()
    services.dispatcher.register("alert.slack", Kind(slack))
    with pytest.raises(ValueError, match="registered already"):
        services.dispatcher.register("alert.slack", Kind(None))
    assert services.dispatcher.run_once() == 1
    assert [d.body for d in slack.delivered] == [b'{"text": "not a retry command"}']
    assert rows(services, "alert.slack")[0].status == "delivered"
    assert services.dispatcher.run_once() == 0


def test_a_failing_kind_does_not_hold_up_another_kind_in_the_same_pass(services: Services) -> None:
    """More failing entries than one claim takes, written first: the healthy kind's entry behind them is
    still delivered in the first pass, because each kind claims its own."""
    down = RecordingTransport(error="receiver down")
    up = RecordingTransport()
    services.dispatcher.register("down", Kind(down))
    services.dispatcher.register("up", Kind(up))
    for n in range(3 * CLAIM_BATCH):
        enqueue(services, "down", f"d-{n}")
    enqueue(services, "up", "u-1")

    assert services.dispatcher.run_once() == CLAIM_BATCH + 1
    assert [d.kind for d in up.delivered] == ["up"]
    assert rows(services, "up")[0].status == "delivered"
    assert down.attempts == CLAIM_BATCH
    assert {r.status for r in rows(services, "down")} == {"pending"}
    # Draining tries the rest once each and stops: entries backing off are not due.
    assert services.dispatcher.flush() == 2 * CLAIM_BATCH
    assert {(r.status, r.attempts) for r in rows(services, "down")} == {("pending", 1)}


def test_a_hanging_kind_does_not_delay_another_kind(services: Services) -> None:
    """Lanes: with the dispatcher's threads running, a kind whose receiver hangs on its first entry
    leaves the healthy kind's entry (written after all of the hanging kind's) to be delivered."""
    hanging = Blocking()
    arrived = threading.Event()
    healthy: list[Delivery] = []

    def receive(delivery: Delivery) -> None:
        healthy.append(delivery)
        arrived.set()

    services.dispatcher.register("hangs", Kind(hanging))
    services.dispatcher.register("works", Kind(CallableTransport(receive)))
    for n in range(2 * CLAIM_BATCH):
        enqueue(services, "hangs", f"h-{n}")
    enqueue(services, "works", "w-1")

    services.dispatcher.start()
    try:
        assert hanging.entered.wait(60), "the hanging kind never tried its first entry"
        assert arrived.wait(60), "the healthy kind was not delivered while the other hung"
        assert hanging.delivered == []
        assert {r.status for r in rows(services, "hangs")} == {"pending"}
    finally:
        hanging.release.set()
        services.dispatcher.stop()

    [done] = rows(services, "works")
    assert done.status == "delivered"
    assert [d.delivery_id for d in healthy] == [entry_of(done).delivery_id]
    # Stopping handed back what the hanging lane had claimed but not tried: due now, attempt uncounted.
    now = services.clock.now_ms()
    for row in rows(services, "hangs"):
        assert row.status == "delivered" or (row.attempts, row.next_attempt_ms) == (0, now), row
    assert len(hanging.delivered) == sum(r.status == "delivered" for r in rows(services, "hangs"))


# --- attempts and giving up -------------------------------------------------------------------------------


def test_each_kind_gives_up_by_its_own_policy(services: Services, clock: FakeClock) -> None:
    once = Kind(RecordingTransport(error="gone"), DeliveryPolicy(1, SECOND_MS, SECOND_MS))
    patient = Kind(RecordingTransport(error="gone"))
    services.dispatcher.register("once", once)
    services.dispatcher.register("patient", patient)
    enqueue(services, "once", "o-1")
    enqueue(services, "patient", "p-1")

    assert services.dispatcher.run_once() == 2
    [dead] = rows(services, "once")
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 1, "gone")
    assert dead.finished_ms == clock.now_ms()
    assert once.given_up == [("o-1", "gone")]
    for attempt in (1, 2):
        [waiting] = rows(services, "patient")
        assert (waiting.status, waiting.attempts, waiting.last_error) == ("pending", attempt, "gone")
        assert waiting.next_attempt_ms > clock.now_ms()  # backing off
        assert services.dispatcher.run_once() == 0
        clock.advance(PATIENT.backoff_cap_ms)
        assert services.dispatcher.run_once() == 1
    assert [(r.status, r.attempts) for r in rows(services, "patient")] == [("dead", 3)]
    assert patient.given_up == [("p-1", "gone")]


def test_giving_up_commits_with_the_dead_entry_or_not_at_all(services: Services, clock: FakeClock) -> None:
    kind = Kind(None, DeliveryPolicy(1, SECOND_MS, SECOND_MS))
    kind.follow_up, kind.fail = "audit", True
    services.dispatcher.register("fragile", kind)
    enqueue(services, "fragile", "f-1")

    with pytest.raises(RuntimeError, match="give-up failed"):
        services.dispatcher.run_once()
    assert [(r.kind, r.status) for r in rows(services)] == [("fragile", "pending")]

    # Once the give-up works, the entry is dead and what the give-up wrote exists, together.
    kind.fail = False
    clock.advance(int(services.settings.outbox_lease_s * 1000))
    assert services.dispatcher.run_once() == 1
    assert [(r.kind, r.ref_id, r.status) for r in rows(services)] == [
        ("fragile", "f-1", "dead"),
        ("audit", "f-1", "pending"),
    ]
    assert rows(services, "fragile")[0].last_error == "no transport"


def test_an_entry_settles_once(services: Services, clock: FakeClock) -> None:
    """A worker whose lease ran out while it delivered finds the entry settled by the one that took it
    over: its own settlement (and its kind's give-up) does not happen."""
    enqueue(services, "k", "k-1")
    now = clock.now_ms()
    with services.db.write() as conn:
        [first] = outbox_store.claim_due(conn, "k", now, MINUTE_MS, 10)
        assert outbox_store.claim_due(conn, "k", now, MINUTE_MS, 10) == []  # leased
        assert outbox_store.claim_due(conn, "other", now + HOUR_MS, MINUTE_MS, 10) == []
        [second] = outbox_store.claim_due(conn, "k", now + MINUTE_MS, MINUTE_MS, 10)
        assert (first.attempts, second.attempts) == (1, 2)
        assert first.delivery_id == second.delivery_id
        assert outbox_store.settle(conn, second.outbox_id, OutboxStatus.DELIVERED, now, None)
        assert not outbox_store.settle(conn, first.outbox_id, OutboxStatus.DEAD, now, "late")
    [row] = rows(services)
    assert (row.status, row.last_error) == ("delivered", None)


# --- transports and the delivery id -----------------------------------------------------------------------


class Answers:
    """An ``httpx.MockTransport`` handler: answers the given statuses in turn, and keeps each request."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0))


@pytest.fixture
def answers() -> Answers:
    return Answers(500, 200, 200)


@pytest.fixture
def hooked(settings: Settings, clock: FakeClock, answers: Answers) -> Iterator[Services]:
    """Services whose retry commands go to a webhook served by ``answers``."""
    client = httpx.Client(transport=httpx.MockTransport(answers))
    svc = Services(
        settings, clock, retry_transport=WebhookHandler("http://pipeline.test/r", SECRET, 5.0, client)
    )
    svc.start()
    yield svc
    svc.stop()
    client.close()


def test_every_delivery_carries_one_id_per_entry(
    hooked: Services, clock: FakeClock, answers: Answers
) -> None:
    """Two retry commands through the signed webhook; the first answered 500 once. Each attempt carries
    its entry's delivery id (the same on the redelivery, another for the other entry) and a valid
    signature of exactly the stored command."""
    first = failed_artifact_with_retry(hooked, clock, "a1")
    second = failed_artifact_with_retry(hooked, clock, "a2")
    assert hooked.dispatcher.run_once() == 2
    clock.advance(int(hooked.settings.retry_backoff_cap_s * 1000))
    assert hooked.dispatcher.run_once() == 1
    assert hooked.dispatcher.run_once() == 0

    by_ref = {r.ref_id: r for r in rows(hooked)}
    assert [(by_ref[r].status, by_ref[r].attempts) for r in (first, second)] == [
        ("delivered", 2),
        ("delivered", 1),
    ]
    ids = [request.headers[DELIVERY_HEADER] for request in answers.requests]
    expected = {ref: entry_of(row).delivery_id for ref, row in by_ref.items()}
    assert ids == [expected[first], expected[second], expected[first]]
    assert expected[first] != expected[second]
    assert all(UUID.match(i) for i in ids)
    for request in answers.requests:
        body = request.content
        assert request.headers[SIGNATURE_HEADER] == sign(body, SECRET)
        assert request.headers["Content-Type"] == "application/json"
        assert body == by_ref[RetryCommand.from_json(body).retry_id].payload.encode()


def test_transports_report_failures_as_delivery_errors() -> None:
    delivery = Delivery("d-1", "k", b"{}")

    def broken(_: Delivery) -> None:
        raise ConnectionError("pipe closed")

    with pytest.raises(DeliveryError, match="pipe closed"):
        CallableTransport(broken).send(delivery)

    fake = RecordingTransport(error="refused")
    with pytest.raises(DeliveryError, match="refused"):
        fake.send(delivery)
    fake.error = None
    fake.send(delivery)
    assert (fake.attempts, fake.delivered) == (2, [delivery])

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    for handler, message in ((unreachable, "unreachable: ConnectError"), (Answers(503), "answered 503")):
        hook = WebhookTransport(
            "http://x.test/", None, 5.0, httpx.Client(transport=httpx.MockTransport(handler))
        )
        with pytest.raises(DeliveryError, match=message):
            hook.send(delivery)
        hook.close()
    unsigned = Answers(200)
    hook = WebhookTransport(
        "http://x.test/", None, 5.0, httpx.Client(transport=httpx.MockTransport(unsigned))
    )
    hook.send(delivery)
    hook.close()
    assert SIGNATURE_HEADER not in unsigned.requests[0].headers
    assert unsigned.requests[0].headers[DELIVERY_HEADER] == "d-1"


# --- retention --------------------------------------------------------------------------------------------


def test_settled_entries_expire_by_when_they_settled_and_pending_ones_never(
    services: Services, clock: FakeClock, settings: Settings
) -> None:
    retention_ms = settings.outbox_retention_d * DAY_MS
    t0 = clock.now_ms()
    clock.set(t0 - 400 * DAY_MS)
    enqueue(services, "k", "owed")  # pending for longer than any retention
    clock.set(t0 - DAY_MS)
    for ref in ("delivered", "skipped", "dead", "later"):
        enqueue(services, "k", ref)
    settled_at = {"delivered": t0, "skipped": t0, "dead": t0, "later": t0 + DAY_MS}
    with services.db.write() as conn:
        for row in conn.execute(select(outbox).where(outbox.c.ref_id != "owed")):
            status = OutboxStatus.DELIVERED if row.ref_id == "later" else OutboxStatus(row.ref_id)
            assert outbox_store.settle(conn, row.outbox_id, status, settled_at[row.ref_id], None)

    def cleanup_at(now_ms: int) -> tuple[int, list[str]]:
        clock.set(now_ms)
        deleted = Retention(services.db, clock, settings).cleanup_events()["outbox_deleted"]
        return deleted, sorted(r.ref_id for r in rows(services))

    # Exactly at the cutoff is kept; a millisecond later the three settled at t0 go, in batches of 2.
    assert cleanup_at(t0 + retention_ms) == (0, ["dead", "delivered", "later", "owed", "skipped"])
    assert cleanup_at(t0 + retention_ms + 1) == (3, ["later", "owed"])
    assert cleanup_at(t0 + 1000 * DAY_MS) == (1, ["owed"])
    assert [r.status for r in rows(services)] == ["pending"]


def test_outbox_retention_is_its_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().outbox_retention_d == 30
    monkeypatch.setenv("VOICEMON_OUTBOX_RETENTION_D", "7")
    assert Settings().outbox_retention_d == 7
