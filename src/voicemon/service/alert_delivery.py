"""The alert notification kinds of the outbox (SPEC 15): a signed webhook, a Slack incoming webhook, and
Alertmanager's API v2.

A webhook or Slack entry is one transition of one alert (``alert.fired``, ``alert.escalated``,
``alert.acknowledged``, ``alert.resolved``), with the alert as it was when the transition committed.

An Alertmanager entry is a sync: every evaluation writes one, naming the alerts open after it and those
it resolved (an acknowledgement writes one for its alert). Its delivery reads those alerts as they are
then, and sends their state: Alertmanager keeps an alert only while it is re-sent, so a sync that arrives
late still sends the truth. It also keeps each acknowledged alert's silence (:class:`AlertmanagerKind`).

How each transition's notification went is recorded on the alert (``alert_deliveries``): delivered, in
the transaction that settles the entry; undeliverable, in the transaction that gives it up.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.alerts import AlertState
from voicemon.domain.schedule import interval_ms
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.errors import DeliveryError
from voicemon.service.alertmanager import AlertmanagerClient, alert_payload
from voicemon.service.dispatch import DeliveryPolicy, Outcome, delivered
from voicemon.service.transports import Delivery, Transport, WebhookTransport
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import alerts as alert_store
from voicemon.storage.alerts import AlertRecord, Silence
from voicemon.storage.outbox import OutboxEntry


class Channel:
    """The notification channels: one outbox kind each."""

    WEBHOOK = "alert_webhook"
    SLACK = "alert_slack"
    ALERTMANAGER = "alert_alertmanager"


def _record(
    entry: OutboxEntry,
    channel: str,
    status: str,
    now_ms: int,
    error: str | None,
    alert_id: str,
    notification: str,
) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "channel": channel,
        "notification": notification,
        "status": status,
        "attempts": entry.attempts,
        "at_ms": now_ms,
        "error": error,
    }


def _records(
    entry: OutboxEntry, channel: str, status: str, now_ms: int, error: str | None
) -> list[dict[str, Any]]:
    """One delivery row per transition the entry carried: a webhook or Slack entry carries one, an
    Alertmanager sync those of its alerts that changed (a plain refresh is not recorded)."""
    payload = orjson.loads(entry.payload)
    if "alerts" in payload:
        told = [(a["alert_id"], a["notification"]) for a in payload["alerts"] if a.get("notification")]
    else:
        told = [(entry.ref_id, payload.get("notification", ""))]
    return [_record(entry, channel, status, now_ms, error, alert_id, note) for alert_id, note in told]


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
            alert_store.insert_deliveries(conn, _records(entry, self.channel, "delivered", now_ms, None))

        return delivered(record)

    def give_up(self, conn: Connection, entry: OutboxEntry, error: str, now_ms: int) -> None:
        _give_up(conn, entry, self.channel, error, now_ms)


def _give_up(conn: Connection, entry: OutboxEntry, channel: str, error: str, now_ms: int) -> None:
    message = f"undeliverable after {entry.attempts} attempts: {error}"
    alert_store.insert_deliveries(conn, _records(entry, channel, "undeliverable", now_ms, message))


# How long a silence runs: it is extended once less than half of it is left, so an acknowledged alert
# stays silenced while voicemon evaluates, and a silence left behind (voicemon gone) ends by itself.
SILENCE_MS = 60 * MINUTE_MS
# How many evaluation intervals an open alert stays active in Alertmanager without being re-sent.
ACTIVE_INTERVALS = 4


def am_labels(alert: AlertRecord, severity: str) -> dict[str, str]:
    """The labels that are the alert in Alertmanager (SPEC 15); a platform-wide alert has no
    ``organization_id``, a rule that is not per stage no ``stage``."""
    labels = {"alertname": alert.rule, "severity": severity, "source": "voicemon"}
    if alert.scope:
        labels["organization_id"] = alert.scope
    if alert.stage:
        labels["stage"] = alert.stage
    return labels


class AlertmanagerKind:
    """Delivers Alertmanager syncs: posts every named alert as it is now (an open one active until
    :data:`ACTIVE_INTERVALS` evaluation intervals from now, a resolved one ended at its resolution), and
    keeps the silences of acknowledgements:

    - an acknowledged alert gets a silence matching exactly its labels (``createdBy`` who acknowledged,
      ``comment`` the note), extended while it stays open;
    - an escalation changes the severity label: the old labels are sent resolved, their silence is
      expired, and the new labels are silenced from the next sync on, so that Alertmanager notifies the
      escalation once, as the webhook and Slack channels do;
    - a resolved alert's silence is expired.

    Silence ids are recorded on the alert in the transaction that settles the entry."""

    channel = Channel.ALERTMANAGER

    def __init__(
        self,
        db: Database,
        clock: Clock,
        client: AlertmanagerClient,
        policy: DeliveryPolicy,
        evaluation_schedule: str,
    ) -> None:
        self._db = db
        self._clock = clock
        self._client = client
        self.policy = policy
        self._schedule = evaluation_schedule

    def deliver(self, entry: OutboxEntry) -> Outcome:
        items = orjson.loads(entry.payload)["alerts"]
        with self._db.read() as conn, conn.begin():
            found = alert_store.alerts_with_silences(conn, [i["alert_id"] for i in items])
        now_ms = self._clock.now_ms()
        active_until = now_ms + ACTIVE_INTERVALS * interval_ms(self._schedule, now_ms)
        posts: list[dict[str, Any]] = []
        for item in items:
            if item["alert_id"] not in found:
                continue  # gone under retention since
            alert, silence = found[item["alert_id"]]
            ends = alert.resolved_ms if alert.resolved_ms is not None else active_until
            posts.append(self._payload(alert, alert.severity.value, ends))
            # Labels the alert had before an escalation end now: the entry says so, and so does a
            # silence made for another severity (whichever sync arrives first after the escalation).
            before = {item.get("previous_severity"), silence.severity if silence else None}
            for old in sorted(s for s in before if s and s != alert.severity.value):
                posts.append(self._payload(alert, old, now_ms))
        if posts:
            self._client.post_alerts(posts)
        changes: dict[str, Silence | None] = {}
        try:
            for alert_id, (alert, silence) in found.items():
                changed = self._silence(alert, silence, now_ms)
                if changed is not False:
                    changes[alert_id] = changed
        except DeliveryError:
            # Silences made or ended before the failure exist in Alertmanager now: record them, so
            # that the next attempt extends or expires them instead of leaving them behind.
            with self._db.write() as conn:
                alert_store.set_silences(conn, changes)
            raise

        def record(conn: Connection, at_ms: int) -> None:
            alert_store.set_silences(conn, changes)
            alert_store.insert_deliveries(conn, _records(entry, self.channel, "delivered", at_ms, None))

        return delivered(record)

    def _silence(
        self, alert: AlertRecord, silence: Silence | None, now_ms: int
    ) -> Silence | Literal[False] | None:
        """The alert's silence after this sync (None: none), or False when it stays as it is. A silence
        of another severity means the alert escalated since: it is expired, and the new labels are
        silenced from the next sync on, so that Alertmanager notifies the escalation once."""
        severity = alert.severity.value
        if silence is not None and (
            alert.state is not AlertState.ACKNOWLEDGED or silence.severity != severity
        ):
            self._client.expire_silence(silence.silence_id)
            return None
        if alert.state is not AlertState.ACKNOWLEDGED:
            return False
        if silence is not None and silence.ends_ms - now_ms > SILENCE_MS // 2:
            return False
        silence_id = self._client.put_silence(
            am_labels(alert, severity),
            now_ms,
            now_ms + SILENCE_MS,
            alert.acknowledged_by or "",
            alert.ack_note or "",
            silence.silence_id if silence else None,
        )
        return Silence(silence_id, now_ms + SILENCE_MS, severity)

    @staticmethod
    def _payload(alert: AlertRecord, severity: str, ends_ms: int) -> dict[str, Any]:
        annotations = {
            "summary": alert.message,
            "description": f"{alert.rule} {alert.state.value}: {alert.message}",
            "voicemon_alert_id": alert.alert_id,
        }
        if alert.acknowledged_by:
            annotations["acknowledged_by"] = alert.acknowledged_by
        return alert_payload(am_labels(alert, severity), annotations, alert.started_ms, ends_ms)

    def give_up(self, conn: Connection, entry: OutboxEntry, error: str, now_ms: int) -> None:
        _give_up(conn, entry, self.channel, error, now_ms)


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
