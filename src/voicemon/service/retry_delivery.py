"""The ``retry`` kind of the outbox (SPEC 9): retry commands to the pipeline, and what giving up means.

A command goes out through the configured transport: the pipeline's signed webhook
(:class:`WebhookHandler`) or a callable registered in-process (:func:`handler_transport`). It is not sent
when its retry has already ended (the artifact completed or failed again first): nobody waits for that
work, so the entry is settled ``skipped``. A command still undeliverable after the last attempt fails
its retry: the retry is recorded ``failed``, a ``retry_failed`` event is logged and the artifact goes
back to ``failed``, in the transaction that marks the entry dead.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.model import EventType, artifact_key
from voicemon.domain.retries import EventMaker
from voicemon.errors import DeliveryError
from voicemon.service.dispatch import DeliveryPolicy, Outcome, delivered, skipped
from voicemon.service.ingest import store_events
from voicemon.service.retries import OUTBOX_KIND, RetryCommand
from voicemon.service.transports import (
    CallableTransport,
    Delivery,
    Transport,
    WebhookTransport,
)
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import retries as retry_store
from voicemon.storage.outbox import OutboxEntry

RETRY_KIND = OUTBOX_KIND


class RetryHandler(Protocol):
    """Tells the pipeline to retry, in-process. Returning means delivered; raising means try again later."""

    def __call__(self, command: RetryCommand) -> None: ...


class WebhookHandler(WebhookTransport):
    """The pipeline's retry webhook: the signed webhook transport of retry commands. Called with a command
    (``hook(command)``), it sends that one at once, under a new delivery id, outside the outbox."""

    def __call__(self, command: RetryCommand) -> None:
        self.send(Delivery(str(uuid.uuid4()), RETRY_KIND, command.to_json()))


def handler_transport(handler: RetryHandler) -> Transport:
    """An in-process handler as the transport of retry commands: each delivery is decoded to its command."""
    return CallableTransport(lambda delivery: handler(RetryCommand.from_json(delivery.body)))


def retry_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_attempts=settings.retry_delivery_max_attempts,
        backoff_base_ms=int(settings.retry_backoff_base_s * 1000),
        backoff_cap_ms=int(settings.retry_backoff_cap_s * 1000),
    )


class RetryDelivery:
    """Delivers ``retry`` entries. ``transport`` may be replaced at any time (``set_retry_handler``)."""

    def __init__(
        self, db: Database, clock: Clock, policy: DeliveryPolicy, transport: Transport | None = None
    ) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy
        self.transport = transport

    def deliver(self, entry: OutboxEntry) -> Outcome:
        command = RetryCommand.from_json(entry.payload)
        key = artifact_key(command.organization_id, command.artifact_id)
        with self._db.read() as conn:
            flying = retry_store.in_flight(conn, [key]).get(key)
        if flying is None or flying.retry_id != command.retry_id:
            return skipped("retry already ended")
        transport = self.transport
        if transport is None:
            raise DeliveryError("no retry handler is configured (set VOICEMON_RETRY_WEBHOOK_URL)")
        # The stored payload is the command's JSON: sent as it is, so every attempt signs the same bytes.
        transport.send(Delivery(entry.delivery_id, entry.kind, entry.payload.encode()))

        def record(conn: Connection, now_ms: int) -> None:
            retry_store.mark_dispatched(conn, command.retry_id, now_ms)

        return delivered(record)

    def give_up(self, conn: Connection, entry: OutboxEntry, error: str, now_ms: int) -> None:
        message = f"undeliverable after {entry.attempts} attempts: {error}"
        retry = retry_store.fail_in_flight(conn, entry.ref_id, now_ms, message)
        if retry is None:  # it ended meanwhile: its outcome stands
            return
        state = artifact_store.get_artifact(conn, retry.key)
        notes = {retry.key: state.voice_note_id if state else None}
        event = EventMaker(notes, now_ms)(retry, EventType.RETRY_FAILED, now_ms, message)
        store_events(conn, [event], now_ms)
