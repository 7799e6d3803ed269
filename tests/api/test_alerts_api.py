"""Alerts through HTTP (SPEC 14): the evaluation job, lists with filters and cursors, one alert with its
history, acknowledgement by staff, rule changes, and what an organization's viewer may see."""

from __future__ import annotations

from typing import Any

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import assert_error, ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import MINUTE_MS

_n = iter(range(10**9))


def _ended(api: Api, org: str, completed: int, failed: int, at_ms: int) -> None:
    batch: list[dict[str, Any]] = []
    for i in range(completed + failed):
        aid = f"api-art-{next(_n)}"
        batch.append(ev("artifact_received", aid, at_ms - 1000, organization_id=org))
        kind = "artifact_completed" if i < completed else "artifact_failed"
        batch.append(ev(kind, aid, at_ms, organization_id=org))
    assert api.services.ingest_blocking(batch, STAFF).accepted == len(batch)


def _evaluate(api: Api) -> dict[str, Any]:
    run = api.call("POST", "/v1/jobs/evaluate-alerts/runs")
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "succeeded", run.text
    summary: dict[str, Any] = run.json()["summary"]
    return summary


def _open(api: Api, key: str | None = None, **filters: str) -> list[dict[str, Any]]:
    reply = api.call("GET", "/v1/alerts", key, params={"state": "open", "rule": "failure_rate", **filters})
    assert reply.status_code == 200, reply.text
    return items_of(reply)


def test_an_alert_fires_is_acknowledged_and_resolves_through_the_api(api: Api, clock: FakeClock) -> None:
    _ended(api, "org-a", 10, 30, NOW_MS - MINUTE_MS)  # 75 % failed: critical
    assert _evaluate(api)["fired"] == 2  # org-a, and the platform that holds its traffic
    [alert] = _open(api, organization_id="org-a")
    assert (alert["severity"], alert["state"], alert["value"], alert["threshold"]) == (
        "critical",
        "firing",
        0.75,
        0.25,
    )
    assert alert["last_evaluation"] == "breaching"
    [platform] = [a for a in _open(api) if "organization_id" not in a]
    assert "organization_name" not in platform  # a platform-wide alert has no organization keys

    acked = api.call("POST", f"/v1/alerts/{alert['alert_id']}/ack", json={"note": "ASR provider down"})
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert (body["state"], body["acknowledged_by"], body["ack_note"]) == (
        "acknowledged",
        "test",
        "ASR provider down",
    )
    assert [t["kind"] for t in body["transitions"]] == ["fired", "acknowledged"]
    assert body["transitions"][1]["actor"] == "test"  # the name of the staff key

    # A second acknowledgement is refused and changes nothing.
    again = api.call("POST", f"/v1/alerts/{alert['alert_id']}/ack", json={"note": "again"})
    assert_error(again, 409, "alert_acknowledged")
    detail = api.call("GET", f"/v1/alerts/{alert['alert_id']}").json()
    assert detail["ack_note"] == "ASR provider down"
    assert len(detail["transitions"]) == 2

    # The failures stop: the 30-minute window moves past them, and two clear evaluations resolve it.
    for step in (1, 2):
        clock.set(NOW_MS + 30 * MINUTE_MS + step * 5 * MINUTE_MS)
        _ended(api, "org-a", 25, 0, clock.now_ms() - MINUTE_MS)
        _evaluate(api)
    assert _open(api, organization_id="org-a") == []
    resolved = api.call("GET", f"/v1/alerts/{alert['alert_id']}").json()
    assert resolved["state"] == "resolved"
    assert resolved["resolved_at"] is not None
    assert [t["kind"] for t in resolved["transitions"]] == ["fired", "acknowledged", "resolved"]
    listed = items_of(api.call("GET", "/v1/alerts", params={"state": "resolved", "organization_id": "org-a"}))
    assert [a["alert_id"] for a in listed] == [alert["alert_id"]]


def test_an_organization_viewer_sees_only_its_alerts_by_list_and_by_id(api: Api) -> None:
    _ended(api, "org-a", 10, 30, NOW_MS - MINUTE_MS)
    _ended(api, "org-b", 10, 30, NOW_MS - MINUTE_MS)
    _evaluate(api)
    viewer_a = api.key("viewer", "org-a")
    seen = _open(api, viewer_a)
    assert {a["organization_id"] for a in seen} == {"org-a"}
    [b_alert] = _open(api, organization_id="org-b")
    assert_error(api.call("GET", f"/v1/alerts/{b_alert['alert_id']}", viewer_a), 404, "alert_not_found")
    assert_error(api.call("GET", "/v1/alerts?organization_id=org-b", viewer_a), 403, "forbidden_organization")
    assert_error(
        api.call("POST", f"/v1/alerts/{seen[0]['alert_id']}/ack", viewer_a, json={}), 403, "forbidden_role"
    )
    assert _open(api, organization_id="org-a")[0]["state"] == "firing"


def test_pages_of_alerts_hold_every_alert_once_newest_first(api: Api, clock: FakeClock) -> None:
    for i, org in enumerate(("org-a", "org-b", "org-c")):
        clock.set(NOW_MS + i * 5 * MINUTE_MS)
        _ended(api, org, 10, 30, clock.now_ms() - MINUTE_MS)
        _evaluate(api)
    everything = items_of(api.call("GET", "/v1/alerts", params={"rule": "failure_rate", "limit": 500}))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"rule": "failure_rate", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = api.call("GET", "/v1/alerts", params=params).json()
        seen += [a["alert_id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [a["alert_id"] for a in everything]
    assert len(seen) == 4  # three organizations and the platform
    starts = [a["started_at"] for a in everything]
    assert starts == sorted(starts, reverse=True)
    other = api.call("GET", "/v1/alerts", params={"rule": "stuck_artifacts", "cursor": page_cursor(api)})
    assert_error(other, 400, "invalid_cursor")


def page_cursor(api: Api) -> str:
    cursor: str = api.call("GET", "/v1/alerts", params={"rule": "failure_rate", "limit": 1}).json()[
        "next_cursor"
    ]
    return cursor


def test_rule_changes_are_checked_recorded_and_used(api: Api) -> None:
    rules = {r["rule"]: r for r in items_of(api.call("GET", "/v1/alert-rules"))}
    assert len(rules) == 11
    assert rules["failure_rate"]["updated_at"] is None
    assert rules["stage_latency"]["per_stage"] is True

    bad = api.call("PUT", "/v1/alert-rules/failure_rate", json={"min_volum": 5})
    assert bad.status_code == 422, bad.text
    assert "min_volum" in bad.text
    falling = [{"severity": "high", "threshold": 0.5}, {"severity": "critical", "threshold": 0.2}]
    bad = api.call("PUT", "/v1/alert-rules/failure_rate", json={"levels": falling})
    assert_error(bad, 422, "invalid_rule")
    assert api.call("PUT", "/v1/alert-rules/failure_rate", json={"enabled": None}).status_code == 422
    assert_error(api.call("PUT", "/v1/alert-rules/no_such_rule", json={}), 404, "rule_not_found")
    after_refusals = {r["rule"]: r for r in items_of(api.call("GET", "/v1/alert-rules"))}
    assert after_refusals == rules

    changed = api.call("PUT", "/v1/alert-rules/failure_rate", json={"min_volume": 100})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["min_volume"], changed.json()["updated_by"]) == (100, "test")
    assert changed.json()["levels"] == rules["failure_rate"]["levels"]
    _ended(api, "org-a", 10, 30, NOW_MS - MINUTE_MS)  # 40 ended: below the new minimum volume
    _evaluate(api)
    assert _open(api) == []
