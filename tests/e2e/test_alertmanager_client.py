"""AlertmanagerClient against a real Alertmanager, checked through Alertmanager's own API.

Alertmanager reads wall-clock time, so these tests do too. Each test's alert carries an organization id
of its own, which the queries filter on; one Alertmanager serves the whole module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.alertmanager import alertmanager_url  # noqa: F401 (a fixture)
from tests.helpers import wait_for
from voicemon.domain.timeutil import MINUTE_MS, SECOND_MS, parse_time
from voicemon.errors import DeliveryError
from voicemon.service.alertmanager import DEFAULT_SILENCE_COMMENT, AlertmanagerClient, alert_payload

WAIT_S = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


def new_labels() -> dict[str, str]:
    return {
        "alertname": "voicemon_stage_errors",
        "severity": "critical",
        "organization_id": f"org-{uuid.uuid4()}",
        "stage": "transcribe",
        "source": "voicemon",
    }


@pytest.fixture
def am(alertmanager_url: str) -> Iterator[AlertmanagerClient]:  # noqa: F811
    client = AlertmanagerClient(alertmanager_url, 5.0)
    yield client
    client.close()


def listed(url: str, labels: dict[str, str], **params: str) -> list[dict[str, Any]]:
    """Alertmanager's ``GET /api/v2/alerts`` for this test's organization only."""
    query = {"filter": f'organization_id="{labels["organization_id"]}"', **params}
    response = httpx.get(f"{url}/api/v2/alerts", params=query, timeout=5.0)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def silence(url: str, silence_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v2/silence/{silence_id}", timeout=5.0)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def silences(url: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """``GET /api/v2/silences`` for the silences that match this test's organization."""
    query = {"filter": f'organization_id="{labels["organization_id"]}"'}
    response = httpx.get(f"{url}/api/v2/silences", params=query, timeout=5.0)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def fire(am: AlertmanagerClient, labels: dict[str, str], starts_at_ms: int) -> None:
    am.post_alerts([alert_payload(labels, {"summary": "errors"}, starts_at_ms, starts_at_ms + 5 * MINUTE_MS)])


def suppressed_by(url: str, labels: dict[str, str], silence_id: str) -> bool:
    alerts = listed(url, labels)
    return (
        len(alerts) == 1
        and alerts[0]["status"]["state"] == "suppressed"
        and alerts[0]["status"]["silencedBy"] == [silence_id]
    )


def test_a_posted_alert_is_active_with_exactly_its_labels(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    labels, start = new_labels(), now_ms()
    am.post_alerts(
        [alert_payload(labels, {"summary": "s"}, start, start + MINUTE_MS, "http://voicemon.test/alerts/1")]
    )

    [alert] = listed(alertmanager_url, labels)
    assert alert["labels"] == labels
    assert alert["annotations"] == {"summary": "s"}
    assert alert["generatorURL"] == "http://voicemon.test/alerts/1"
    assert alert["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
    assert parse_time(alert["endsAt"]) == start + MINUTE_MS


def test_a_silence_of_the_alerts_labels_suppresses_it(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    labels, start = new_labels(), now_ms()
    fire(am, labels, start)

    silence_id = am.put_silence(labels, start, start + 10 * MINUTE_MS, "ops@example.com", "on it")

    wait_for(lambda: suppressed_by(alertmanager_url, labels, silence_id), WAIT_S, "the alert suppressed")
    made = silence(alertmanager_url, silence_id)
    assert made["status"]["state"] == "active"
    assert (made["createdBy"], made["comment"]) == ("ops@example.com", "on it")
    assert {m["name"]: m["value"] for m in made["matchers"]} == labels
    assert all(m["isEqual"] and not m["isRegex"] for m in made["matchers"])


def test_an_empty_comment_and_creator_get_defaults(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    start = now_ms()
    made = silence(alertmanager_url, am.put_silence(new_labels(), start, start + MINUTE_MS, "", ""))
    assert (made["createdBy"], made["comment"]) == ("voicemon", DEFAULT_SILENCE_COMMENT)


def test_extending_an_active_silence_replaces_it_and_keeps_the_alert_suppressed(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    # Alertmanager moves a past start to "now"; the same past start sent again no longer matches, so
    # it expires the silence and makes a replacement rather than updating in place.
    labels, start = new_labels(), now_ms() - MINUTE_MS
    fire(am, labels, start)
    first = am.put_silence(labels, start, start + 10 * MINUTE_MS, "ops", "on it")
    wait_for(lambda: suppressed_by(alertmanager_url, labels, first), WAIT_S, "the alert suppressed")

    second = am.put_silence(labels, start, start + 60 * MINUTE_MS, "ops", "on it", silence_id=first)

    assert second != first
    assert silence(alertmanager_url, first)["status"]["state"] == "expired"
    replacement = silence(alertmanager_url, second)
    assert replacement["status"]["state"] == "active"
    assert parse_time(replacement["endsAt"]) == start + 60 * MINUTE_MS
    wait_for(lambda: suppressed_by(alertmanager_url, labels, second), WAIT_S, "the alert suppressed")


def test_extending_a_pending_silence_keeps_its_id(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    labels, start = new_labels(), now_ms() + 10 * MINUTE_MS
    first = am.put_silence(labels, start, start + MINUTE_MS, "ops", "later")

    assert am.put_silence(labels, start, start + 2 * MINUTE_MS, "ops", "later", silence_id=first) == first
    extended = silence(alertmanager_url, first)
    assert extended["status"]["state"] == "pending"
    assert parse_time(extended["endsAt"]) == start + 2 * MINUTE_MS


def test_updating_an_expired_or_unknown_silence_makes_a_new_one(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    labels, start = new_labels(), now_ms()
    expired = am.put_silence(labels, start, start + MINUTE_MS, "ops", "x")
    am.expire_silence(expired)

    renewed = am.put_silence(labels, start, start + MINUTE_MS, "ops", "x", silence_id=expired)
    unknown = str(uuid.uuid4())
    recreated = am.put_silence(labels, start, start + MINUTE_MS, "ops", "x", silence_id=unknown)

    assert len({expired, renewed, recreated, unknown}) == 4
    states = {s["id"]: s["status"]["state"] for s in silences(alertmanager_url, labels)}
    assert states == {expired: "expired", renewed: "active", recreated: "active"}


def test_resolving_the_alert_and_expiring_its_silence(
    am: AlertmanagerClient,
    alertmanager_url: str,  # noqa: F811
) -> None:
    labels, start = new_labels(), now_ms() - MINUTE_MS
    fire(am, labels, start)
    silence_id = am.put_silence(labels, start, start + 10 * MINUTE_MS, "ops", "on it")
    wait_for(lambda: suppressed_by(alertmanager_url, labels, silence_id), WAIT_S, "the alert suppressed")

    am.post_alerts([alert_payload(labels, {"summary": "errors"}, start, now_ms() - SECOND_MS)])

    # A resolved alert is not listed as resolved: it leaves the list, whatever the filters ask for.
    wait_for(lambda: listed(alertmanager_url, labels, active="true") == [], WAIT_S, "the alert resolved")
    everything = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}
    assert listed(alertmanager_url, labels, **everything) == []
    assert silence(alertmanager_url, silence_id)["status"]["state"] == "active"

    am.expire_silence(silence_id)
    assert silence(alertmanager_url, silence_id)["status"]["state"] == "expired"
    am.expire_silence(silence_id)
    assert silence(alertmanager_url, silence_id)["status"]["state"] == "expired"


def test_expiring_an_unknown_silence_is_not_an_error(am: AlertmanagerClient) -> None:
    am.expire_silence(str(uuid.uuid4()))


def test_a_refused_silence_raises(am: AlertmanagerClient) -> None:
    start = now_ms()
    with pytest.raises(DeliveryError, match="400"):  # Alertmanager refuses an end in the past
        am.put_silence(new_labels(), start - 2 * MINUTE_MS, start - MINUTE_MS, "ops", "x")


def mock_client(handler: Any) -> AlertmanagerClient:
    return AlertmanagerClient("http://am.test/", 5.0, httpx.Client(transport=httpx.MockTransport(handler)))


def test_an_error_status_raises_delivery_error() -> None:
    seen: list[httpx.Request] = []
    am = mock_client(lambda request: seen.append(request) or httpx.Response(500, text="boom"))
    with pytest.raises(DeliveryError, match="500"):
        am.post_alerts([alert_payload(new_labels(), {}, 0, MINUTE_MS)])
    with pytest.raises(DeliveryError, match="500"):
        am.expire_silence("s-1")
    assert [(r.method, str(r.url)) for r in seen] == [
        ("POST", "http://am.test/api/v2/alerts"),
        ("DELETE", "http://am.test/api/v2/silence/s-1"),
    ]
    am.close()


def test_an_unreachable_alertmanager_raises_delivery_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    am = mock_client(refuse)
    with pytest.raises(DeliveryError, match="unreachable"):
        am.post_alerts([])
    with pytest.raises(DeliveryError, match="unreachable"):
        am.put_silence({"alertname": "a"}, 0, MINUTE_MS, "ops", "x")
    am.close()


def test_a_silence_reply_without_an_id_raises_delivery_error() -> None:
    am = mock_client(lambda request: httpx.Response(200, json={}))
    with pytest.raises(DeliveryError, match="silenceID"):
        am.put_silence({"alertname": "a"}, 0, MINUTE_MS, "ops", "x")
    am.close()
