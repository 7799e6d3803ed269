"""``Client``: fire-and-forget event logging with a bounded queue and a background sender.

``log_event`` never blocks the caller on I/O and never raises into it. It stamps the event with a
time-ordered ``event_id`` and the current time, then appends it to a bounded in-memory queue; a
background thread sends batches (by size or every ``flush_interval_s``), retrying with exponential
backoff and jitter. Because the id is assigned before the first send, a resent batch is stored once.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from voicemon.sdk.stage import StageScope

logger = logging.getLogger("voicemon.sdk")

F = TypeVar("F", bound=Callable[..., Any])

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters of what the client did with the events it was given."""

    queued: int
    sent: int
    rejected: int
    dropped: int
    pending: int


def _event_id() -> str:
    """A UUIDv7-shaped id: 48 bits of epoch ms, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _RateLimitedLog:
    """At most one log line per kind of problem every ``every_s`` seconds; counts what it held back."""

    def __init__(self, every_s: float = 10.0) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self._every_s:
            held = self._held.pop(kind, 0)
            suffix = f" ({held} similar messages suppressed)" if held else ""
            logger.warning(message + suffix, *args, extra={"action": f"sdk_{kind}"})
            self._last[kind] = now
        else:
            self._held[kind] += 1


class Client:
    """Sends pipeline events to a voicemon server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        api_key: an ``ingest`` (or ``staff``) key.
        batch_size: events per request (at most 1000).
        flush_interval_s: the longest an event waits before its batch is sent.
        max_queue: events held in memory; beyond it new events are dropped and counted.
        timeout_s: per-request timeout.
        max_backoff_s: the longest wait between two attempts to send one batch.
        transport: an httpx transport, for tests.

    Example::

        client = voicemon.Client("http://127.0.0.1:8000", api_key=KEY)
        client.log_event("artifact_received", artifact_id="note-1", organization_id="org-a")
        client.close()
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_queue: int = 100_000,
        timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000")
        self._endpoint = url.rstrip("/") + "/v1/events"
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._max_backoff_s = max_backoff_s
        self._http = httpx.Client(
            timeout=timeout_s, transport=transport, headers={"Authorization": f"Bearer {api_key}"}
        )
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._deadline: float | None = None
        self._queued = self._sent = self._rejected = self._dropped = 0
        self._log = _RateLimitedLog()
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._run, name="voicemon-sdk-sender", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, Client._at_exit, weakref.ref(self))
        atexit.register(self._finalizer)

    # --- the caller's side: cheap, never raises ------------------------------------------------------

    def log_event(self, event_type: str, **fields: Any) -> None:
        """Queue one event (SPEC 3 fields as keyword arguments); returns at once.

        ``event_id`` and ``timestamp`` (epoch ms) are filled in when not given. Never raises; an event
        that does not fit the queue, or that cannot be encoded as JSON (an arbitrary object, NaN), is
        dropped and counted in :attr:`stats`.
        """
        try:
            if len(self._queue) >= self._max_queue or self._closing:
                self._dropped += 1
                return
            fields["event_type"] = event_type
            if "event_id" not in fields:
                fields["event_id"] = _event_id()
            if "timestamp" not in fields:
                fields["timestamp"] = time.time_ns() // 1_000_000
            self._queue.append(fields)
            self._queued += 1
            if len(self._queue) >= self._batch_size:
                self._wake.set()
        except Exception:  # the pipeline must never see our failure
            self._dropped += 1

    def stage(
        self, stage: str, *, artifact_id: str, organization_id: str | None = None, **fields: Any
    ) -> StageScope:
        """A context manager (and decorator) that logs ``*_started``, then the completion with its
        ``duration_ms`` and any metadata set inside, or the failure with the exception's type and message
        (the exception is re-raised).

        >>> with client.stage("transcription", artifact_id="note-1") as s:   # doctest: +SKIP
        ...     s.set(confidence_score=0.93, ai_cost_usd=0.004)
        """
        return StageScope(self.log_event, stage, artifact_id, organization_id, fields)

    @property
    def stats(self) -> ClientStats:
        return ClientStats(
            self._queued, self._sent, self._rejected, self._dropped, len(self._queue) + self._in_flight
        )

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued event was sent (or given up on); False if ``timeout`` passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._in_flight:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, for at most ``timeout`` seconds, then stop. Events still unsent are
        counted as dropped. Safe to call twice."""
        if self._thread.is_alive():
            self._deadline = time.monotonic() + timeout
            self.flush(timeout)
            self._closing = True
            self._wake.set()
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + 0.5)
        left = len(self._queue)
        if left:
            self._queue.clear()
            self._dropped += left
            self._log.warning("dropped_at_close", "voicemon: %d events not sent before close", left)
        self._http.close()
        atexit.unregister(self._finalizer)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _at_exit(ref: weakref.ReferenceType[Client]) -> None:
        client = ref()
        if client is not None:
            client.close(timeout=2.0)

    # --- the sender thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            while self._queue:
                body, size = self._encode(self._take())
                try:
                    if size:
                        self._send(body, size)
                except Exception as exc:  # e.g. a 2xx reply that is not JSON: the sender must live on
                    self._dropped += size
                    self._log.warning(
                        "send_failed", "voicemon: dropped %d events (%s)", size, exc.__class__.__name__
                    )
                with self._idle:
                    self._in_flight = 0
                    self._idle.notify_all()
            with self._idle:
                self._idle.notify_all()
            if self._closing:
                return

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with self._idle:
            while self._queue and len(batch) < self._batch_size:
                batch.append(self._queue.popleft())
            self._in_flight = len(batch)
        return batch

    def _encode(self, batch: list[dict[str, Any]]) -> tuple[bytes, int]:
        """The request body and how many events it holds. Events that cannot be encoded as JSON are
        left out, dropped and counted, so that one of them costs neither its batch nor the sender."""
        try:
            return _dumps({"events": batch}), len(batch)
        except Exception:
            pass
        good = []
        for event in batch:
            try:
                _dumps(event)
            except Exception:
                self._dropped += 1
            else:
                good.append(event)
        self._log.warning(
            "unencodable",
            "voicemon: dropped %d events that cannot be encoded as JSON",
            len(batch) - len(good),
        )
        return _dumps({"events": good}), len(good)

    def _send(self, body: bytes, size: int) -> None:
        attempt = 0
        while True:
            try:
                response = self._http.post(
                    self._endpoint, content=body, headers={"Content-Type": "application/json"}
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                status, response = 0, None
                self._log.warning(
                    "unreachable", "voicemon: server unreachable (%s); will retry", exc.__class__.__name__
                )
            if 200 <= status < 300 and response is not None:
                reply = response.json()
                self._sent += int(reply.get("accepted", 0)) + int(reply.get("duplicates", 0))
                rejected = reply.get("rejected") or []
                if rejected:
                    self._rejected += len(rejected)
                    first = rejected[0]["errors"][0]
                    self._log.warning(
                        "rejected",
                        "voicemon: %d events rejected, e.g. %s: %s",
                        len(rejected),
                        first["field"],
                        first["code"],
                    )
                return
            if status and status not in _RETRYABLE_STATUS:
                self._dropped += size
                self._log.warning(
                    "refused",
                    "voicemon: server refused a batch with %d; dropped %d events",
                    status,
                    size,
                )
                return
            attempt += 1
            wait = min(self._max_backoff_s, 0.1 * 2**attempt) * (0.5 + self._rng.random() / 2)
            if not self._pause(wait):
                self._dropped += size
                return

    def _pause(self, wait_s: float) -> bool:
        """Sleep ``wait_s`` between two attempts; False, without sleeping it out, once close()'s deadline
        would pass first. close() may come during the pause, so the deadline is checked as it goes."""
        end = time.monotonic() + wait_s
        while self._deadline is None or end <= self._deadline:
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.05))
        return False


def _dumps(value: Any) -> bytes:
    """JSON as httpx would send it; raises on what JSON cannot hold (objects, NaN, Infinity)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
