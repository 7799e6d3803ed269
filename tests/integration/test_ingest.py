"""Ingestion through the service layer and HTTP: validation, idempotency, one transaction."""

from __future__ import annotations

from typing import Any

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import ev
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS
from voicemon.service import Services
from voicemon.storage.events import count_events


def _post(api: Api, body: Any, key: str | None = None) -> dict[str, Any]:
    r = api.call("POST", "/v1/events", key, json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_single_event_is_stored_once(api: Api) -> None:
    event = ev("artifact_received", "a1", NOW_MS - MINUTE_MS, organization_id="o1")
    assert _post(api, event) == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert _post(api, event) == {"accepted": 0, "duplicates": 1, "rejected": []}
    with api.services.db.read() as conn:
        assert count_events(conn) == 1


def test_mixed_batch_stores_exactly_its_valid_items(api: Api) -> None:
    batch = [
        ev("artifact_received", "a1", NOW_MS - MINUTE_MS),
        ev("not_a_type", "a2"),
        ev("transcription_started", "a1", NOW_MS - 30_000),
        ev("artifact_received", "a3", NOW_MS + 10 * MINUTE_MS),
        ev("artifact_received", "a4", NOW_MS - 49 * HOUR_MS),
    ]
    body = _post(api, {"events": batch})
    assert body["accepted"] == 2
    assert body["duplicates"] == 0
    report = {r["index"]: r for r in body["rejected"]}
    assert set(report) == {1, 3, 4}
    assert report[1]["event_id"] == batch[1]["event_id"]
    assert [(e["field"], e["code"]) for e in report[1]["errors"]] == [("event_type", "invalid_enum")]
    assert [(e["field"], e["code"]) for e in report[3]["errors"]] == [("timestamp", "in_future")]
    assert [(e["field"], e["code"]) for e in report[4]["errors"]] == [("timestamp", "too_old")]
    with api.services.db.read() as conn:
        assert count_events(conn) == 2


def test_replayed_batch_changes_nothing(api: Api) -> None:
    batch = [ev("artifact_received", f"r{i}", NOW_MS - i * 1000, organization_id="o1") for i in range(20)]
    batch += [ev("artifact_failed", f"r{i}", NOW_MS - i * 1000 + 500, organization_id="o1") for i in range(5)]
    assert _post(api, {"events": batch})["accepted"] == 25
    before = _snapshot(api)
    assert _post(api, {"events": batch}) == {"accepted": 0, "duplicates": 25, "rejected": []}
    assert _snapshot(api) == before


def _snapshot(api: Api) -> tuple[Any, ...]:
    realtime = api.call("GET", "/v1/metrics/realtime").json()
    org = api.call("GET", "/v1/metrics/realtime?organization_id=o1").json()
    arts = api.call("GET", "/v1/artifacts?limit=500").json()["items"]
    events = api.call("GET", "/v1/events?limit=500").json()["items"]
    return realtime["counts"], org["counts"], arts, len(events)


def test_not_json_is_400_and_not_a_body_is_400(api: Api) -> None:
    r = api.call("POST", "/v1/events", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    for body in ([1, 2], "text", 3, {"events": "x"}):
        r = api.call("POST", "/v1/events", json=body)
        assert r.status_code == 400, body
        assert set(r.json()["error"]) == {"code", "message"}


def test_oversized_batch_and_body_are_413_and_store_nothing(api: Api) -> None:
    batch = [ev("artifact_received", f"b{i}", NOW_MS) for i in range(1001)]
    r = api.call("POST", "/v1/events", json={"events": batch})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "batch_too_large"
    big = ev("artifact_received", "big", NOW_MS, metadata={"note": "x" * (5 * 1024 * 1024)})
    r = api.call("POST", "/v1/events", json=big)
    assert r.status_code == 413
    with api.services.db.read() as conn:
        assert count_events(conn) == 0


def test_same_id_twice_in_one_batch_counts_once(services: Services) -> None:
    first = ev("artifact_received", "d1", NOW_MS)
    second = dict(first, artifact_id="d2")
    result = services.ingest_blocking([first, second], STAFF)
    assert (result.accepted, result.duplicates) == (1, 1)
    detail = services.queries.artifact(STAFF, "d1")
    assert detail.summary.event_count == 1


def test_statement_count_does_not_grow_with_batch_size(services: Services, sql_counter: Any) -> None:
    def batch(tag: str, count: int) -> list[dict[str, Any]]:
        out = []
        for i in range(count):
            art = f"{tag}-{i % max(1, count // 5)}"
            out.append(ev("transcription_completed", art, NOW_MS - i, organization_id=f"org{i % 7}"))
        return out

    counts = {}
    for size in (1, 1000):
        services.ingest_blocking(batch(f"warm{size}", size), STAFF)
        with sql_counter:
            result = services.ingest_blocking(batch(f"measured{size}", size), STAFF)
        assert result.accepted == size
        counts[size] = sql_counter.count
    assert counts[1] == counts[1000], counts
    # existing ids, (PostgreSQL: empty artifact rows), artifact lock, retries in flight, event insert,
    # artifact writes, counter buckets, period versions.
    assert counts[1] <= 8, counts
