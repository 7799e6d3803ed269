"""The Alertmanager channel end to end (SPEC 15), against a real Alertmanager: an alert fired in voicemon
is listed there with its labels, is silenced there once acknowledged, notified again (unsilenced) when it
escalates and then silenced anew, and is resolved there, its silence expired, when voicemon resolves it.

Alertmanager reads wall-clock time, so the services' clock is set to it at every step. The rule is
``stuck_artifacts``, which needs no window of traffic: artifacts received twenty minutes ago with no event
since are stuck now. Each test uses an organization of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.alertmanager import alertmanager_url  # noqa: F401 (a fixture)
from tests.conftest import STAFF
from tests.helpers import ev, free_port, wait_for
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import alerts as alert_store

WAIT_S = 10.0


def wall_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def svc(settings: Settings, alertmanager_url: str) -> Iterator[Services]:  # noqa: F811
    s = Services(
        settings.model_copy(update={"alert_alertmanager_url": alertmanager_url}), FakeClock(wall_ms())
    )
    s.start()
    yield s
    s.stop()


def _step(svc: Services) -> None:
    """Evaluate now, and deliver what it enqueued."""
    clock = svc.clock
    assert isinstance(clock, FakeClock)
    clock.set(wall_ms())
    svc.alerts.evaluate(STAFF)
    svc.dispatcher.flush()


def _listed(url: str, org: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'organization_id="{org}"'}, timeout=5.0)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def _silence(url: str, silence_id: str) -> dict[str, Any]:
    reply = httpx.get(f"{url}/api/v2/silence/{silence_id}", timeout=5.0)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def _stuck(svc: Services, org: str, n: int) -> list[str]:
    ids = [f"stuck-{uuid.uuid4()}" for _ in range(n)]
    at = wall_ms() - 20 * MINUTE_MS
    svc.ingest_blocking([ev("artifact_received", a, at, organization_id=org) for a in ids], STAFF)
    return ids


def _silence_of(svc: Services, alert_id: str) -> alert_store.Silence | None:
    with svc.db.read() as conn:
        return alert_store.alerts_with_silences(conn, [alert_id])[alert_id][1]


def test_fire_silence_escalate_and_resolve_in_alertmanager(svc: Services, alertmanager_url: str) -> None:  # noqa: F811
    url = alertmanager_url
    org = f"org-{uuid.uuid4()}"
    stuck = _stuck(svc, org, 1)
    _step(svc)
    [alert] = [
        a
        for a, _ in svc.alerts.list_alerts(STAFF, state="open", rule="stuck_artifacts").items
        if a.scope == org
    ]

    def active_labels() -> list[dict[str, str]]:
        return [a["labels"] for a in _listed(url, org) if a["status"]["state"] == "active"]

    wait_for(lambda: len(active_labels()) == 1, WAIT_S, "the alert listed active")
    [labels] = active_labels()
    assert labels == {
        "alertname": "stuck_artifacts",
        "severity": "medium",
        "organization_id": org,
        "source": "voicemon",
    }
    [listed] = _listed(url, org)
    assert listed["annotations"]["voicemon_alert_id"] == alert.alert_id
    assert listed["annotations"]["summary"] == alert.message

    # Acknowledged in voicemon: silenced in Alertmanager, for exactly these labels, by that person.
    svc.alerts.acknowledge(STAFF, alert.alert_id, "restarting the worker")
    svc.dispatcher.flush()
    silence = _silence_of(svc, alert.alert_id)
    assert silence is not None
    wait_for(lambda: _listed(url, org)[0]["status"]["state"] == "suppressed", WAIT_S, "the alert silenced")
    assert _listed(url, org)[0]["status"]["silencedBy"] == [silence.silence_id]
    made = _silence(url, silence.silence_id)
    assert (made["createdBy"], made["comment"], made["status"]["state"]) == (
        "staff",
        "restarting the worker",
        "active",
    )
    assert {m["name"]: m["value"] for m in made["matchers"]} == labels

    # A later evaluation keeps the silence (it has more than half of its hour left).
    _step(svc)
    assert _silence_of(svc, alert.alert_id) == silence

    # Ten stuck: the alert escalates to high. Alertmanager hears it unsilenced; the old labels resolve.
    stuck += _stuck(svc, org, 9)
    _step(svc)
    assert _silence_of(svc, alert.alert_id) is None
    assert _silence(url, silence.silence_id)["status"]["state"] == "expired"
    wait_for(lambda: [lb["severity"] for lb in active_labels()] == ["high"], WAIT_S, "the escalation active")
    # The next evaluation silences the escalated alert again: still acknowledged until it resolves.
    _step(svc)
    again = _silence_of(svc, alert.alert_id)
    assert again is not None
    assert again.severity == "high"
    wait_for(
        lambda: [a["status"]["state"] for a in _listed(url, org)] == ["suppressed"], WAIT_S, "silenced again"
    )

    # The artifacts complete: two clear evaluations resolve the alert, here and there.
    svc.ingest_blocking(
        [ev("artifact_completed", a, wall_ms() - 1000, organization_id=org) for a in stuck], STAFF
    )
    _step(svc)
    _step(svc)
    resolved = svc.alerts.get(STAFF, alert.alert_id)
    assert resolved.alert.state.value == "resolved"
    wait_for(lambda: _listed(url, org) == [], WAIT_S, "the alert resolved")
    assert _silence(url, again.silence_id)["status"]["state"] == "expired"
    assert _silence_of(svc, alert.alert_id) is None
    told = [(d["channel"], d["notification"], d["status"]) for d in resolved.deliveries]
    assert told == [
        ("alert_alertmanager", "alert.fired", "delivered"),
        ("alert_alertmanager", "alert.acknowledged", "delivered"),
        ("alert_alertmanager", "alert.escalated", "delivered"),
        ("alert_alertmanager", "alert.resolved", "delivered"),
    ]


def test_an_unreachable_alertmanager_is_recorded_undeliverable_on_the_alert(settings: Settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    clock = FakeClock(wall_ms())
    s = Services(
        settings.model_copy(update={"alert_alertmanager_url": dead, "retry_delivery_max_attempts": 2}), clock
    )
    s.start()
    try:
        org = f"org-{uuid.uuid4()}"
        _stuck(s, org, 1)
        s.alerts.evaluate(STAFF)
        for _ in range(4):
            s.dispatcher.flush()
            clock.advance(10 * MINUTE_MS)
        [alert] = [a for a, _ in s.alerts.list_alerts(STAFF, state="open").items if a.scope == org]
        [delivery] = s.alerts.get(STAFF, alert.alert_id).deliveries
        assert (delivery["channel"], delivery["status"], delivery["attempts"]) == (
            "alert_alertmanager",
            "undeliverable",
            2,
        )
        assert "alertmanager unreachable" in delivery["error"]
    finally:
        s.stop()
