"""Transports: how one delivery leaves the process (SPEC 15). Each is an adapter behind :class:`Transport`.

- :class:`WebhookTransport` POSTs the body, signed with ``X-Voicemon-Signature: sha256=<hex HMAC>``
  when it has a secret. Tests give it an ``httpx.Client`` over ``httpx.MockTransport``.
- :class:`CallableTransport` hands the delivery to a function of the embedding process.
- :class:`RecordingTransport` is the in-memory fake: it keeps what it is given, or refuses it.

Every delivery carries its id in ``X-Voicemon-Delivery`` (an argument, for a callable): the same on every
attempt of one outbox entry, so a receiver can drop the duplicates that at-least-once delivery sends.
Sending returns when the receiver has taken the delivery, and raises :class:`DeliveryError` otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from voicemon.errors import DeliveryError

SIGNATURE_HEADER = "X-Voicemon-Signature"
DELIVERY_HEADER = "X-Voicemon-Delivery"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt's content: ``body`` is JSON, exactly the bytes sent and signed."""

    delivery_id: str
    kind: str
    body: bytes


class Transport(Protocol):
    def send(self, delivery: Delivery) -> None:
        """Deliver, or raise :class:`DeliveryError`."""
        ...


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, the value of :data:`SIGNATURE_HEADER`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookTransport:
    """POSTs the body as JSON to ``url``, signed when a secret is set; a 2xx answer is delivered.

    >>> seen = []
    >>> mock = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(204))
    >>> hook = WebhookTransport("http://hook.test/", "k", 5.0, httpx.Client(transport=mock))
    >>> hook.send(Delivery("d-1", "retry", b"{}"))
    >>> seen[0].headers["X-Voicemon-Delivery"]
    'd-1'
    >>> hook.close()
    """

    def __init__(
        self, url: str, secret: str | None, timeout_s: float, client: httpx.Client | None = None
    ) -> None:
        self._url = url
        self._secret = secret
        self._client = client or httpx.Client(timeout=timeout_s)

    def send(self, delivery: Delivery) -> None:
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery.delivery_id}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(delivery.body, self._secret)
        try:
            response = self._client.post(self._url, content=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook unreachable: {exc.__class__.__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook answered {response.status_code}")

    def close(self) -> None:
        self._client.close()


class CallableTransport:
    """Hands each delivery to ``receive`` in the dispatcher's thread; returning means delivered, and any
    exception it raises is a failed attempt."""

    def __init__(self, receive: Callable[[Delivery], None]) -> None:
        self._receive = receive

    def send(self, delivery: Delivery) -> None:
        try:
            self._receive(delivery)
        except DeliveryError:
            raise
        except Exception as exc:
            raise DeliveryError(f"{exc}" or exc.__class__.__name__) from exc


class RecordingTransport:
    """The in-memory fake: keeps every delivery in ``delivered``; while ``error`` is set it refuses each
    one with ``DeliveryError(error)`` instead. ``attempts`` counts both. Thread-safe."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.delivered: list[Delivery] = []
        self.attempts = 0
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> None:
        with self._lock:
            self.attempts += 1
            if self.error is not None:
                raise DeliveryError(self.error)
            self.delivered.append(delivery)
