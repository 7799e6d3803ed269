"""Ingestion through the service layer and HTTP: validation, idempotency, one transaction."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import BACKEND, NOW_MS, STAFF, Api
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain.counters import bucket_deltas
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS
from voicemon.errors import IntegrityConflict, StorageError
from voicemon.service import Services
from voicemon.service import writer as writer_module
from voicemon.service.ingest import validate_items
from voicemon.storage import dialect
from voicemon.storage import events as event_store
from voicemon.storage.counters import add_to_buckets
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
    # stored ids, (PostgreSQL: empty artifact rows), artifact lock, event insert, artifact writes,
    # counter buckets, period versions. (No event here can end a retry: no retry query.)
    assert 6 <= counts[1] <= 7, sql_counter.statements


def _counter_total(services: Services) -> int:
    with services.db.read() as conn:
        return int(
            conn.execute(text("SELECT COALESCE(SUM(artifacts_received), 0) FROM minute_counters")).scalar()
        )


def test_an_id_stored_meanwhile_rolls_back_the_whole_commit_and_is_redone(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server stores an id between our check and our insert. The unique index refuses the
    insert: on PostgreSQL that error arrives with the pipelined COMMIT, on SQLite from the insert itself.
    Either way nothing of the first attempt stays, and the redone commit counts the event once."""
    stored = ev("artifact_received", "race-1", NOW_MS)
    assert services.ingest_blocking([stored], STAFF).accepted == 1
    before = _counter_total(services)

    real = event_store.ask_stored_ids
    calls = []

    def blind_once(conn: Any, ids: Any) -> Any:
        calls.append(list(ids))
        if len(calls) == 1:
            real(conn, ids)  # sent, but its answer is ignored: the id looks new
            return set
        return real(conn, ids)

    monkeypatch.setattr(event_store, "ask_stored_ids", blind_once)
    fresh = ev("artifact_received", "race-2", NOW_MS)
    result = services.ingest_blocking([stored, fresh], STAFF)

    assert len(calls) == 2, "the refused commit is redone"
    assert (result.accepted, result.duplicates) == (1, 1)
    assert _counter_total(services) == before + 1
    assert services.queries.artifact(STAFF, "race-1").summary.event_count == 1
    assert services.queries.artifact(STAFF, "race-2").summary.event_count == 1


def test_a_refused_pipelined_commit_leaves_nothing(services: Services) -> None:
    stored = ev("artifact_received", "refused-1", NOW_MS)
    assert services.ingest_blocking([stored], STAFF).accepted == 1
    valid, _ = validate_items([stored, ev("artifact_received", "refused-2", NOW_MS)], STAFF, NOW_MS, HOUR_MS)
    before = _counter_total(services)

    def write_as_if_new() -> None:
        with services.db.write(pipelined=True) as conn:
            event_store.insert_events(conn, valid)
            add_to_buckets(conn, bucket_deltas(valid))

    # The unique index refuses the stored id, and with it the whole transaction.
    with pytest.raises(IntegrityConflict):
        write_as_if_new()
    assert _counter_total(services) == before
    with services.db.read() as conn:
        assert count_events(conn) == 1


def test_a_replay_whose_summary_expired_writes_no_empty_summary(services: Services) -> None:
    """PostgreSQL inserts an empty summary row before locking; when every event turns out to be a
    duplicate, that row must not stay behind."""
    event = ev("artifact_received", "expired-1", NOW_MS)
    assert services.ingest_blocking([event], STAFF).accepted == 1
    with services.db.write() as conn:
        conn.execute(text("DELETE FROM artifacts WHERE artifact_id = 'expired-1'"))
    result = services.ingest_blocking([event], STAFF)
    assert (result.accepted, result.duplicates) == (0, 1)
    with services.db.read() as conn:
        left = conn.execute(text("SELECT COUNT(*) FROM artifacts WHERE artifact_id = 'expired-1'")).scalar()
    assert left == 0


def test_a_kept_connection_is_dropped_after_a_failure_but_not_after_a_refusal(services: Services) -> None:
    kept = services.db.kept_connection()
    try:
        with kept.write() as conn:
            first = conn.connection.driver_connection
        stored = ev("artifact_received", "kept-1", NOW_MS)
        assert services.ingest_blocking([stored], STAFF).accepted == 1
        valid, _ = validate_items([stored], STAFF, NOW_MS, HOUR_MS)

        def refused() -> None:
            with kept.write() as conn:
                event_store.insert_events(conn, valid)

        with pytest.raises(IntegrityConflict):
            refused()
        with kept.write() as conn:
            assert conn.connection.driver_connection is first

        def failing() -> None:
            with kept.write() as conn:
                conn.execute(text("SELECT no_such_column FROM events"))

        with pytest.raises(StorageError):
            failing()
        with kept.write() as conn:
            assert conn.connection.driver_connection is not first
            assert count_events(conn) == 1
    finally:
        kept.close()


@pytest.mark.skipif(BACKEND != "postgresql", reason="a server closing its connections")
def test_ingestion_goes_on_after_the_server_closed_every_connection(services: Services) -> None:
    assert services.ingest_blocking([ev("artifact_received", "restart-1", NOW_MS)], STAFF).accepted == 1
    with services.db.engine.connect() as conn:
        closed = conn.execute(
            text(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert closed, "the writer's kept connection was open"
    result = services.ingest_blocking([ev("artifact_received", "restart-2", NOW_MS)], STAFF)
    assert result.accepted == 1
    assert services.queries.artifact(STAFF, "restart-2").summary.event_count == 1


def test_a_failed_driver_read_is_a_storage_error(services: Services) -> None:
    """Reads that go through the driver's own cursor (organization names) fail like any other read."""

    def read_missing_table() -> None:
        with services.db.read() as conn:
            dialect.ask_keys(conn, "SELECT x FROM no_such_table WHERE x {keys}", ["a"])()

    with pytest.raises(StorageError):
        read_missing_table()


def test_a_database_that_keeps_failing_is_a_503_after_one_retry(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer tries a failed commit once more on a fresh connection, and then gives up: the client
    gets a 503 (and retries later), the writer does not spin."""
    driver = api.services.db.engine.dialect.loaded_dbapi
    attempts = []

    def failing(*_: Any) -> set[str]:
        attempts.append(1)
        if len(attempts) > 3:
            raise RuntimeError("the writer kept retrying")
        raise driver.OperationalError("the database is gone")

    monkeypatch.setattr(writer_module, "store_events", failing)
    r = api.call("POST", "/v1/events", json=ev("artifact_received", "gone-1", NOW_MS))
    assert r.status_code == 503, r.text
    assert len(attempts) == 2


@pytest.mark.parametrize("artifact", ["race-art", None], ids=["of-an-artifact", "of-no-artifact"])
def test_the_same_event_sent_twice_at_once_without_a_timestamp_is_stored_once(
    services: Services, artifact: str | None
) -> None:
    """Two servers store the same re-sent event at the same moment. Without a timestamp each stamps its
    copy with its own clock (here a millisecond apart), so the unique index (event_id, ts_ms) cannot
    tell them apart; the locks taken before the duplicate check do (the artifact's row, or the guard
    for an event of no artifact)."""
    other = Services(services.settings, FakeClock(NOW_MS + 1))
    other.start()
    try:
        rounds = 12
        kind = "artifact_received" if artifact else "circuit_breaker_opened"
        for n in range(rounds):
            body: dict[str, Any] = {"event_id": f"twice-{artifact}-{n}", "event_type": kind}
            if artifact:
                body["artifact_id"] = f"{artifact}-{n}"
            gate = threading.Barrier(2)
            results: list[Any] = []

            def send(
                server: Services,
                event: dict[str, Any] = body,
                gate: threading.Barrier = gate,
                results: list[Any] = results,
            ) -> None:
                gate.wait()
                results.append(server.ingest_blocking([event], STAFF))

            threads = [threading.Thread(target=send, args=(s,)) for s in (services, other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted((r.accepted, r.duplicates) for r in results) == [(0, 1), (1, 0)], n
    finally:
        other.stop()
    with services.db.read() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT event_id FROM events WHERE event_id LIKE 'twice-%'"))]
    assert len(ids) == len(set(ids)) == rounds
