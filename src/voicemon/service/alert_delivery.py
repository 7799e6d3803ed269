"""The alert notification kinds of the outbox (SPEC 15): a signed webhook, a Slack incoming webhook.

Each entry is one transition of one alert (``alert.fired``, ``alert.escalated``, ``alert.acknowledged``,
``alert.resolved``), with the alert as it was when the transition committed. How each went is recorded
on the alert (``alert_deliveries``): delivered, in the transaction that settles the entry; undeliverable,
in the transaction that gives it up.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from voicemon.service.dispatch import DeliveryPolicy, Outcome, delivered
from voicemon.service.transports import Delivery, Transport, WebhookTransport
from voicemon.settings import Settings
from voicemon.storage import alerts as alert_store
from voicemon.storage.outbox import OutboxEntry


class Channel:
    """The notification channels: one outbox kind each."""

    WEBHOOK = "alert_webhook"
    SLACK = "alert_slack"


def _record(entry: OutboxEntry, channel: str, status: str, now_ms: int, error: str | None) -> dict[str, Any]:
    payload = orjson.loads(entry.payload)
    return {
        "alert_id": entry.ref_id,
        "channel": channel,
        "notification": payload.get("notification", ""),
        "status": status,
        "attempts": entry.attempts,
        "at_ms": now_ms,
        "error": error,
    }


def slack_text(alert: dict[str, Any], notification: str) -> str:
    """One line an operator reads in a channel: what happened, how bad, where, and the exact figure."""
    what = {
        "alert.fired": "FIRING",
        "alert.escalated": "ESCALATED",
        "alert.acknowledged": "ACKNOWLEDGED",
        "alert.resolved": "RESOLVED",
    }[notification]
    where = alert.get("organization_name") or alert.get("organization_id") or "platform"
    stage = f" / {alert['stage']}" if alert.get("stage") else ""
    return f"[{what}] [{alert['severity']}] {alert['rule']}{stage} ({where}): {alert['message']}"


class NotificationKind:
    """Delivers the entries of one channel. ``body`` turns an entry's payload into the bytes sent."""

    def __init__(self, channel: str, transport: Transport, policy: DeliveryPolicy) -> None:
        self.channel = channel
        self.transport = transport
        self.policy = policy

    def body(self, payload: dict[str, Any]) -> bytes:
        if self.channel == Channel.SLACK:
            return orjson.dumps({"text": slack_text(payload["alert"], payload["notification"])})
        return orjson.dumps({"type": payload["notification"], "alert": payload["alert"]})

    def deliver(self, entry: OutboxEntry) -> Outcome:
        payload = orjson.loads(entry.payload)
        self.transport.send(Delivery(entry.delivery_id, entry.kind, self.body(payload)))

        def record(conn: Connection, now_ms: int) -> None:
            alert_store.insert_delivery(conn, _record(entry, self.channel, "delivered", now_ms, None))

        return delivered(record)

    def give_up(self, conn: Connection, entry: OutboxEntry, error: str, now_ms: int) -> None:
        message = f"undeliverable after {entry.attempts} attempts: {error}"
        alert_store.insert_delivery(conn, _record(entry, self.channel, "undeliverable", now_ms, message))


def alert_channels(settings: Settings) -> dict[str, Transport]:
    """The webhook and Slack channels the settings configure."""
    out: dict[str, Transport] = {}
    timeout = settings.retry_webhook_timeout_s
    if settings.alert_webhook_url:
        secret = settings.alert_webhook_secret
        out[Channel.WEBHOOK] = WebhookTransport(
            settings.alert_webhook_url, secret.get_secret_value() if secret else None, timeout
        )
    if settings.alert_slack_url:
        out[Channel.SLACK] = WebhookTransport(settings.alert_slack_url, None, timeout)
    return out
