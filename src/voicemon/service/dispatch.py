"""Delivery of retry commands after commit: the transactional outbox and its dispatcher (SPEC 9).

Delivery is at least once: an entry is settled only after its handler returned, and an entry whose worker
died comes due again when its lease runs out. Each command carries ``retry_id`` so receivers can drop
repeats. A command that cannot be delivered within the attempt budget fails its retry: the retry is
recorded ``failed``, a ``retry_failed`` event is logged and the artifact goes back to ``failed``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
from typing import Protocol

import httpx

from voicemon.clock import Clock
from voicemon.domain.model import EventType, artifact_key
from voicemon.domain.retries import EventMaker, backoff_ms
from voicemon.service.ingest import store_events
from voicemon.service.retries import RetryCommand
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import retries as retry_store
from voicemon.storage.retries import (
    OUTBOX_DEAD,
    OUTBOX_DELIVERED,
    OUTBOX_PENDING,
    OUTBOX_SKIPPED,
    OutboxEntry,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voicemon-Signature"
CLAIM_BATCH = 20


class RetryHandler(Protocol):
    """Tells the pipeline to retry. Returning means delivered; raising means try again later."""

    def __call__(self, command: RetryCommand) -> None: ...


class DeliveryError(Exception):
    """A handler could not deliver a command (the message says why)."""


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, the value of :data:`SIGNATURE_HEADER`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookHandler:
    """POSTs the command as JSON to the pipeline's URL, signed when a secret is set; 2xx is delivered."""

    def __init__(
        self, url: str, secret: str | None, timeout_s: float, client: httpx.Client | None = None
    ) -> None:
        self._url = url
        self._secret = secret
        self._client = client or httpx.Client(timeout=timeout_s)

    def __call__(self, command: RetryCommand) -> None:
        body = command.to_json()
        headers = {"Content-Type": "application/json"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook unreachable: {exc.__class__.__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook answered {response.status_code}")

    def close(self) -> None:
        self._client.close()


class RetryDispatcher:
    """Delivers due outbox entries. ``run_once`` is one pass (tests drive it); ``start`` runs passes in
    a thread, woken early by :meth:`wake` after a retry commits."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        handler: RetryHandler | None,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self.handler = handler
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="voicemon-dispatcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception:
                logger.exception("dispatch pass failed", extra={"action": "dispatch_failed"})
                done = 0
            if done == 0:
                self._wake.wait(self._settings.dispatcher_poll_s)
                self._wake.clear()

    def run_once(self) -> int:
        """Claim the due entries and try each once; returns how many were tried."""
        s = self._settings
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            entries = retry_store.claim_due(conn, now_ms, int(s.outbox_lease_s * 1000), CLAIM_BATCH)
        for entry in entries:
            self._deliver(entry)
        return len(entries)

    def _deliver(self, entry: OutboxEntry) -> None:
        command = RetryCommand.from_json(entry.payload)
        with self._db.read() as conn:
            key = artifact_key(command.organization_id, command.artifact_id)
            flying = retry_store.in_flight(conn, [key]).get(key)
        if flying is None or flying.retry_id != command.retry_id:
            # The retry ended before it was delivered (its artifact completed or failed again, or it
            # was given up on): telling the pipeline now would start work nobody is waiting for.
            with self._db.write() as conn:
                retry_store.settle(
                    conn, entry.outbox_id, OUTBOX_SKIPPED, self._clock.now_ms(), "retry already ended", None
                )
            return
        try:
            if self.handler is None:
                raise DeliveryError("no retry handler is configured (set VOICEMON_RETRY_WEBHOOK_URL)")
            self.handler(command)
        except Exception as exc:
            self._failed_attempt(entry, command, f"{exc}" or exc.__class__.__name__)
            return
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            retry_store.settle(conn, entry.outbox_id, OUTBOX_DELIVERED, now_ms, None, None)
            retry_store.mark_dispatched(conn, command.retry_id, now_ms)
        logger.info("retry delivered", extra={"action": "retry_delivered", "retry_id": command.retry_id})

    def _failed_attempt(self, entry: OutboxEntry, command: RetryCommand, error: str) -> None:
        s = self._settings
        now_ms = self._clock.now_ms()
        if entry.attempts < s.retry_delivery_max_attempts:
            wait = backoff_ms(
                entry.attempts,
                int(s.retry_backoff_base_s * 1000),
                int(s.retry_backoff_cap_s * 1000),
                self._rng,
            )
            with self._db.write() as conn:
                retry_store.settle(conn, entry.outbox_id, OUTBOX_PENDING, now_ms, error, now_ms + wait)
            logger.warning(
                "retry delivery failed, will try again",
                extra={
                    "action": "retry_delivery_failed",
                    "retry_id": command.retry_id,
                    "attempt": entry.attempts,
                },
            )
            return
        message = f"undeliverable after {entry.attempts} attempts: {error}"
        with self._db.write() as conn:
            retry_store.settle(conn, entry.outbox_id, OUTBOX_DEAD, now_ms, error, None)
            retry = retry_store.fail_in_flight(conn, command.retry_id, now_ms, message)
            if retry is not None:
                state = artifact_store.get_artifact(conn, retry.key)
                notes = {retry.key: state.voice_note_id if state else None}
                event = EventMaker(notes, now_ms)(retry, EventType.RETRY_FAILED, now_ms, message)
                store_events(conn, [event], now_ms)
        logger.error(
            "retry undeliverable", extra={"action": "retry_undeliverable", "retry_id": command.retry_id}
        )
