"""Retries (SPEC 9) through HTTP and the service layer, on both databases.

Refusals are checked against the full contents of every table, before and after: "no side effect at
all" means not one row anywhere changed. Delivery is driven by hand (``dispatcher.run_once`` and the fake
clock); the real webhook and a real server process are in ``tests/e2e/test_retry_delivery.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import STAFF, Api
from tests.helpers import ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, SECOND_MS
from voicemon.errors import ValidationError
from voicemon.service import Services
from voicemon.service import retries as retry_service
from voicemon.service.retention import Retention
from voicemon.service.retries import RetryCommand
from voicemon.settings import Settings
from voicemon.storage import outbox as outbox_store
from voicemon.storage.tables import metadata, outbox

ORG = "org-r"
MAX_ATTEMPTS = 3
BACKOFF_CAP_MS = 4 * SECOND_MS

# The failure event that fails an artifact at each stage a retry can start from.
FAILURE_OF = {
    "transcription": "transcription_failed",
    "claims_extraction": "claims_extraction_failed",
    "entity_resolution": "entity_resolution_failed",
    "draft_generation": "draft_generation_failed",
    "full": "artifact_failed",
}
RESET_TO = {
    "transcription": "transcribing",
    "claims_extraction": "transcribed",
    "entity_resolution": "processing",
    "draft_generation": "processing",
    "full": "received",
}


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Few delivery attempts and a short backoff, so undeliverable commands give up within a test."""
    return Settings(
        database_url=db_url,
        key_cache_s=0,
        retry_delivery_max_attempts=MAX_ATTEMPTS,
        retry_backoff_base_s=1.0,
        retry_backoff_cap_s=BACKOFF_CAP_MS / SECOND_MS,
    )


@pytest.fixture
def pipeline() -> list[RetryCommand]:
    """The commands the in-process retry handler of these tests received."""
    return []


@pytest.fixture
def with_handler() -> bool:
    """Whether the services have a retry handler; a test parametrizes it to False to have none."""
    return True


@pytest.fixture
def services(
    settings: Settings, clock: FakeClock, with_handler: bool, pipeline: list[RetryCommand]
) -> Iterator[Services]:
    svc = Services(settings, clock)
    if with_handler:
        svc.set_retry_handler(pipeline.append)
    svc.start()
    yield svc
    svc.stop()


# --- helpers ----------------------------------------------------------------------------------------------


def table_contents(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: equal before and after means nothing was written."""
    with services.db.read() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for table in metadata.sorted_tables
        }


def post_events(api: Api, *events: dict[str, Any]) -> None:
    """Post the pipeline's events of organization ORG (an artifact is named by its organization)."""
    events = tuple({"organization_id": ORG, **e} for e in events)
    r = api.call("POST", "/v1/events", json={"events": list(events)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rejected"] == [], body
    assert body["accepted"] == len(events), body


def failed_artifact(
    api: Api, clock: FakeClock, artifact_id: str = "a1", stage: str = "transcription"
) -> None:
    """An artifact received 10 minutes ago that failed at ``stage`` 8 minutes ago."""
    now = clock.now_ms()
    post_events(
        api,
        ev("artifact_received", artifact_id, now - 10 * MINUTE_MS, organization_id=ORG, voice_note_id="vn-1"),
        ev(FAILURE_OF[stage], artifact_id, now - 8 * MINUTE_MS, error_code="E1", error_message="first"),
    )


def retry(api: Api, artifact_id: str = "a1", stage: str = "transcription", key: str | None = None) -> Any:
    return api.call(
        "POST", f"/v1/artifacts/{artifact_id}/retries", key, json={"stage": stage, "reason": "ops"}
    )


def accepted_retry(api: Api, artifact_id: str = "a1", stage: str = "transcription") -> dict[str, Any]:
    r = retry(api, artifact_id, stage)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def artifact(api: Api, artifact_id: str = "a1") -> dict[str, Any]:
    r = api.call("GET", f"/v1/artifacts/{artifact_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def timeline_of(api: Api, event_type: str, artifact_id: str = "a1") -> list[dict[str, Any]]:
    return [e for e in artifact(api, artifact_id)["timeline"] if e["event_type"] == event_type]


def fail_again(api: Api, clock: FakeClock, artifact_id: str = "a1", message: str = "again") -> None:
    """A stage failure later than the retry: it ends the retry ``failed``. In the last stage, so that a
    retry of any stage may follow."""
    clock.advance(SECOND_MS)
    post_events(
        api,
        ev("draft_generation_failed", artifact_id, clock.now_ms(), error_code="E2", error_message=message),
    )


def assert_refused(
    api: Api, response: Callable[[], Any], status: int, code: str | None = None
) -> dict[str, Any]:
    before = table_contents(api.services)
    r = response()
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    assert table_contents(api.services) == before
    return error  # type: ignore[no-any-return]


def outbox_rows(services: Services) -> list[Any]:
    with services.db.read() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.outbox_id)))


# --- refusals leave no trace ------------------------------------------------------------------------------


def test_unknown_artifact_is_404_and_writes_nothing(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock)
    assert_refused(api, lambda: retry(api, "nope"), 404)


def test_artifact_not_failed_is_409_not_failed(api: Api, clock: FakeClock) -> None:
    post_events(api, ev("artifact_received", "a1", clock.now_ms() - MINUTE_MS, organization_id=ORG))
    error = assert_refused(api, lambda: retry(api), 409, "not_failed")
    assert error["message"] == "artifact is neither failed nor stuck (it is received)"
    # A completed artifact is not failed either.
    post_events(api, ev("artifact_completed", "a1", clock.now_ms()))
    assert_refused(api, lambda: retry(api, stage="full"), 409, "not_failed")


def test_retry_in_flight_is_409_retry_in_progress(api: Api, clock: FakeClock, settings: Settings) -> None:
    failed_artifact(api, clock)
    accepted_retry(api)
    # The first retry reset the status: the artifact is active again, neither failed nor stuck, and that
    # is checked first (SPEC 9).
    assert_refused(api, lambda: retry(api), 409, "not_failed")
    # Stuck (silent for longer than the threshold) while its retry is pending: in progress.
    clock.advance(settings.stuck_after_ms + 1)
    assert artifact(api)["stuck"] is True
    assert_refused(api, lambda: retry(api), 409, "retry_in_progress")
    # Still in flight once delivered (dispatched), whatever the stage asked for.
    assert api.services.dispatcher.run_once() == 1
    assert items_of(api.call("GET", "/v1/artifacts/a1/retries"))[0]["status"] == "dispatched"
    assert_refused(api, lambda: retry(api, stage="full"), 409, "retry_in_progress")


def test_eleventh_retry_within_an_hour_is_429(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock)
    start = clock.now_ms()
    for attempt in range(1, 11):
        clock.advance(SECOND_MS)
        assert accepted_retry(api)["attempt"] == attempt
        fail_again(api, clock, message=f"failure {attempt}")
    retries = items_of(api.call("GET", "/v1/artifacts/a1/retries"))
    assert [r["status"] for r in retries] == ["failed"] * 10
    assert artifact(api)["status"] == "failed"
    assert_refused(api, lambda: retry(api), 429)
    # The window slides: an hour after the first retry, one more is allowed again.
    clock.set(start + HOUR_MS + SECOND_MS)
    assert accepted_retry(api)["attempt"] == 11


@pytest.mark.parametrize("role", ["viewer", "ingest"])
def test_viewer_and_ingest_keys_are_403(api: Api, clock: FakeClock, role: str) -> None:
    failed_artifact(api, clock)
    keys = [api.key(role), api.key(role, ORG)]
    for key in keys:
        assert_refused(api, lambda: retry(api, key=key), 403)  # noqa: B023 (called at once)


def test_invalid_stage_is_422_naming_stage(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock)
    for stage in ("ingestion", "confirmation", "Transcription", ""):
        error = assert_refused(api, lambda: retry(api, stage=stage), 422)  # noqa: B023 (called at once)
        assert "stage" in error["message"], error
    before = table_contents(api.services)
    with pytest.raises(ValidationError) as caught:
        api.services.retries.request(STAFF, "a1", "nonsense", "ops")
    assert caught.value.field == "stage"
    assert table_contents(api.services) == before


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"stage": "full"}, "missing"),
        ({"stage": "full", "reason": None}, "string_type"),
        ({"stage": "full", "reason": ""}, "string_too_short"),
        ({"stage": "full", "reason": "x" * 2001}, "string_too_long"),
    ],
    ids=["absent", "null", "empty", "2001 chars"],
)
def test_a_retry_needs_a_reason_of_1_to_2000_characters(
    api: Api, clock: FakeClock, body: dict[str, object], rule: str
) -> None:
    failed_artifact(api, clock)
    before = table_contents(api.services)
    r = api.call("POST", "/v1/artifacts/a1/retries", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith("reason: "), r.text
    assert table_contents(api.services) == before
    ok = api.call("POST", "/v1/artifacts/a1/retries", json={"stage": "full", "reason": "x" * 2000})
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize("reason", ["", "   ", "x" * 2001, "ops\x00", "\ud800"], ids=repr)
def test_the_retry_use_case_refuses_a_bad_reason_from_any_entry_point(
    api: Api, clock: FakeClock, reason: str
) -> None:
    failed_artifact(api, clock)
    before = table_contents(api.services)
    with pytest.raises(ValidationError) as caught:
        api.services.retries.request(STAFF, "a1", "full", reason)
    assert caught.value.field == "reason"
    assert table_contents(api.services) == before


# --- concurrency and the single transaction ---------------------------------------------------------------


def test_fifty_concurrent_requests_start_exactly_one_retry(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock)
    callers = 50
    barrier = threading.Barrier(callers)

    def one(_: int) -> tuple[int, str | None]:
        barrier.wait(timeout=30)
        r = retry(api)
        return r.status_code, (r.json().get("error") or {}).get("code")

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(one, range(callers)))
    assert results.count((202, None)) == 1
    # A request that ran after the winner committed finds the artifact active again (not_failed); one
    # that raced it into the database meets its in-flight record (retry_in_progress).
    refused = [r for r in results if r != (202, None)]
    assert {status for status, _ in refused} == {409}
    assert {code for _, code in refused} <= {"not_failed", "retry_in_progress"}, refused
    detail = artifact(api)
    assert len(detail["retries"]) == 1
    assert detail["retry_count"] == 1
    assert len(timeline_of(api, "retry_initiated")) == 1
    assert len(outbox_rows(api.services)) == 1


class Injected(Exception):
    pass


@pytest.fixture(params=["after_event", "at_outbox"])
def broken_step(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Makes the retry transaction fail after the record, the event and the status reset were written:
    right after storing the event, or when writing the outbox entry (its last step)."""
    if request.param == "after_event":
        real = retry_service.store_events

        def store_then_fail(*args: Any, **kwargs: Any) -> Any:
            real(*args, **kwargs)
            raise Injected("after store_events")

        monkeypatch.setattr(retry_service, "store_events", store_then_fail)
    else:

        def refuse(*_: Any, **__: Any) -> None:
            raise Injected("in enqueue")

        monkeypatch.setattr(outbox_store, "enqueue", refuse)
    yield request.param
    monkeypatch.undo()


def test_failure_inside_the_transaction_leaves_nothing(
    api: Api, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, broken_step: str
) -> None:
    failed_artifact(api, clock)
    before = table_contents(api.services)
    with pytest.raises(Injected):
        api.services.retries.request(STAFF, "a1", "transcription", "ops")
    after = table_contents(api.services)
    assert after == before
    assert after["retries"] == []
    assert after["outbox"] == []
    assert artifact(api)["status"] == "failed"
    assert timeline_of(api, "retry_initiated") == []
    # Nothing half-written blocks the next request: it is attempt 1, with everything in place.
    monkeypatch.undo()
    assert accepted_retry(api)["attempt"] == 1
    assert artifact(api)["status"] == "transcribing"
    assert len(timeline_of(api, "retry_initiated")) == 1
    assert len(outbox_rows(api.services)) == 1


# --- what a retry writes, and how it ends -----------------------------------------------------------------


@pytest.mark.parametrize("stage", list(RESET_TO))
def test_retry_resets_status_and_late_older_events_cannot_undo_it(
    api: Api, clock: FakeClock, stage: str
) -> None:
    failed_artifact(api, clock, stage=stage)
    record = accepted_retry(api, stage=stage)
    assert (record["stage"], record["attempt"], record["status"], record["reason"]) == (
        stage,
        1,
        "pending",
        "ops",
    )
    assert record["from_status"] == "failed"
    detail = artifact(api)
    assert detail["status"] == RESET_TO[stage]
    assert detail["failed_stage"] is None
    assert detail["retry_count"] == 1
    [initiated] = timeline_of(api, "retry_initiated")
    assert initiated["metadata"]["retry_attempt"] == 1
    assert initiated["metadata"]["retry_stage"] == stage
    assert initiated["metadata"]["requested_by"]
    assert initiated["organization_id"] == ORG
    # Events older than the retry, arriving after it: a completion and a failure. Neither moves the
    # status, and the failure does not end the retry (it happened before the retry started).
    now = clock.now_ms()
    post_events(
        api,
        ev("transcription_completed", "a1", now - 30 * SECOND_MS),
        ev("claims_extraction_failed", "a1", now - 20 * SECOND_MS, error_message="old news"),
        ev("artifact_completed", "a1", now - 10 * SECOND_MS),
    )
    detail = artifact(api)
    assert detail["status"] == RESET_TO[stage]
    assert [r["status"] for r in detail["retries"]] == ["pending"]
    assert timeline_of(api, "retry_failed") == timeline_of(api, "retry_succeeded") == []


def test_later_completion_ends_the_retry_succeeded(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock)
    record = accepted_retry(api)
    clock.advance(SECOND_MS)
    post_events(api, ev("transcription_started", "a1", clock.now_ms()))
    assert artifact(api)["retries"][0]["status"] == "pending"
    clock.advance(SECOND_MS)
    done_ms = clock.now_ms()
    completion = [ev("transcription_completed", "a1", done_ms - 500), ev("artifact_completed", "a1", done_ms)]
    post_events(api, *completion)
    detail = artifact(api)
    assert detail["status"] == "completed"
    [ended] = detail["retries"]
    assert ended["retry_id"] == record["retry_id"]
    assert (ended["status"], ended["error"]) == ("succeeded", None)
    assert ended["finished_at"] == items_of(api.call("GET", "/v1/artifacts/a1/retries"))[0]["finished_at"]
    [succeeded] = timeline_of(api, "retry_succeeded")
    assert succeeded["metadata"]["retry_attempt"] == 1
    assert succeeded["timestamp"] == ended["finished_at"]
    assert timeline_of(api, "retry_failed") == []
    # The same completion replayed changes nothing; a later failure no longer touches the ended retry.
    replay = api.call("POST", "/v1/events", json={"events": completion}).json()
    assert (replay["accepted"], replay["duplicates"]) == (0, 2)
    assert len(timeline_of(api, "retry_succeeded")) == 1
    fail_again(api, clock)
    assert artifact(api)["retries"][0]["status"] == "succeeded"
    assert timeline_of(api, "retry_failed") == []


def test_later_failure_ends_the_retry_failed_with_its_error(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock, stage="claims_extraction")
    accepted_retry(api, stage="claims_extraction")
    fail_again(api, clock, message="model timed out")
    detail = artifact(api)
    assert detail["status"] == "failed"
    assert detail["last_error_message"] == "model timed out"
    [ended] = detail["retries"]
    assert (ended["status"], ended["error"]) == ("failed", "model timed out")
    [failed] = timeline_of(api, "retry_failed")
    assert failed["error_message"] == "model timed out"
    assert failed["metadata"]["retry_stage"] == "claims_extraction"
    assert timeline_of(api, "retry_succeeded") == []


def test_delivered_command_marks_the_retry_dispatched(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock, stage="full")
    received: list[RetryCommand] = []
    api.services.set_retry_handler(received.append)
    record = accepted_retry(api, stage="full")
    assert api.services.dispatcher.run_once() == 1
    assert received == [RetryCommand(record["retry_id"], "a1", "vn-1", ORG, "full", 1, True)]
    assert artifact(api)["retries"][0]["status"] == "dispatched"
    [row] = outbox_rows(api.services)
    assert (row.status, row.attempts) == ("delivered", 1)
    # Nothing is delivered twice.
    clock.advance(HOUR_MS)
    assert api.services.dispatcher.run_once() == 0
    assert len(received) == 1


def _always_fails(calls: list[RetryCommand]) -> Callable[[RetryCommand], None]:
    def handler(command: RetryCommand) -> None:
        calls.append(command)
        raise ConnectionError("pipeline down")

    return handler


def test_undeliverable_command_fails_the_retry(api: Api, clock: FakeClock) -> None:
    failed_artifact(api, clock)
    calls: list[RetryCommand] = []
    api.services.set_retry_handler(_always_fails(calls))
    record = accepted_retry(api)
    dispatcher = api.services.dispatcher
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert dispatcher.run_once() == 1, attempt
        [row] = outbox_rows(api.services)
        assert row.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert row.status == "pending"
            assert artifact(api)["retries"][0]["status"] == "pending"
            # Backing off: not due again until the wait is over.
            assert dispatcher.run_once() == 0
            clock.advance(BACKOFF_CAP_MS)
    assert len(calls) == MAX_ATTEMPTS
    [row] = outbox_rows(api.services)
    assert row.status == "dead"
    detail = artifact(api)
    assert detail["status"] == "failed"
    assert detail["failed_stage"] == "transcription"
    [ended] = detail["retries"]
    assert ended["retry_id"] == record["retry_id"]
    assert ended["status"] == "failed"
    assert f"after {MAX_ATTEMPTS} attempts" in (ended["error"] or "")
    [failed] = timeline_of(api, "retry_failed")
    assert failed["error_message"] == ended["error"]
    clock.advance(HOUR_MS)
    assert dispatcher.run_once() == 0
    # The artifact can be retried again.
    assert accepted_retry(api)["attempt"] == 2


def test_attempts_count_across_stages_and_survive_event_expiry(
    api: Api, clock: FakeClock, settings: Settings
) -> None:
    failed_artifact(api, clock)
    for attempt, stage in enumerate(("transcription", "claims_extraction", "full"), start=1):
        clock.advance(SECOND_MS)
        record = accepted_retry(api, stage=stage)
        assert (record["attempt"], record["stage"]) == (attempt, stage)
        fail_again(api, clock, message=f"failure {attempt}")
    detail = artifact(api)
    assert detail["retry_count"] == 3
    assert [r["attempt"] for r in detail["retries"]] == [1, 2, 3]

    clock.advance(49 * HOUR_MS)
    summary = Retention(api.services.db, clock, settings).cleanup_events()
    assert summary["events_deleted"] > 0
    assert summary["retries_deleted"] == 0
    detail = artifact(api)
    assert detail["timeline"] == []
    assert detail["retry_count"] == 3
    assert detail["status"] == "failed"
    history = items_of(api.call("GET", "/v1/artifacts/a1/retries"))
    assert [(r["attempt"], r["stage"], r["status"]) for r in history] == [
        (1, "transcription", "failed"),
        (2, "claims_extraction", "failed"),
        (3, "full", "failed"),
    ]

    fail_again(api, clock, message="after expiry")
    record = accepted_retry(api, stage="entity_resolution")
    assert record["attempt"] == 4
    detail = artifact(api)
    assert detail["retry_count"] == 4
    assert detail["status"] == "processing"
    assert [r["attempt"] for r in detail["retries"]] == [1, 2, 3, 4]
    [initiated] = timeline_of(api, "retry_initiated")
    assert initiated["metadata"]["retry_attempt"] == 4


def test_retry_history_lives_exactly_as_long_as_its_artifact(
    api: Api, clock: FakeClock, settings: Settings
) -> None:
    """Retry records are not aged out on their own: while the artifact's summary is kept (it keeps
    receiving events), its whole history stays and numbering continues; once the summary expires,
    its retries go with it, so retry_count and the history never disagree."""
    day_ms = 24 * HOUR_MS
    failed_artifact(api, clock)
    accepted_retry(api)
    fail_again(api, clock)
    clock.advance(89 * day_ms)
    fail_again(api, clock)
    assert accepted_retry(api)["attempt"] == 2
    fail_again(api, clock)
    clock.advance(2 * day_ms)
    summary = Retention(api.services.db, clock, settings).cleanup_events()
    assert (summary["retries_deleted"], summary["artifacts_deleted"]) == (0, 0)
    fail_again(api, clock)
    assert accepted_retry(api)["attempt"] == 3
    assert [r["attempt"] for r in items_of(api.call("GET", "/v1/artifacts/a1/retries"))] == [1, 2, 3]
    assert api.call("GET", "/v1/artifacts/a1").json()["retry_count"] == 3
    clock.advance(91 * day_ms)
    summary = Retention(api.services.db, clock, settings).cleanup_events()
    assert (summary["retries_deleted"], summary["artifacts_deleted"]) == (3, 1)
    assert api.call("GET", "/v1/artifacts/a1/retries").status_code == 404


def test_failure_stamped_slightly_in_the_future_is_still_reset(api: Api, clock: FakeClock) -> None:
    """Ingestion accepts times up to 5 minutes ahead (clock skew); a retry still resets such a failure."""
    now = clock.now_ms()
    post_events(
        api,
        ev("artifact_received", "a1", now - MINUTE_MS, organization_id=ORG),
        ev("transcription_failed", "a1", now + 2 * MINUTE_MS, error_code="E1", error_message="skewed"),
    )
    assert artifact(api)["status"] == "failed"
    accepted_retry(api, stage="transcription")
    assert artifact(api)["status"] == "transcribing"
    # Active again (the reset outranks the failure stamped ahead of it), so not retried twice.
    assert retry(api).json()["error"]["code"] == "not_failed"


def test_command_of_a_retry_that_already_ended_is_not_sent(api: Api, clock: FakeClock) -> None:
    """The artifact completed before the dispatcher got to the command: nobody waits for that work."""
    calls: list[RetryCommand] = []
    api.services.set_retry_handler(calls.append)
    failed_artifact(api, clock)
    accepted_retry(api)
    clock.advance(1000)
    post_events(api, ev("artifact_completed", "a1", clock.now_ms(), organization_id=ORG))
    assert api.services.dispatcher.run_once() == 1
    assert calls == []
    assert [row.status for row in outbox_rows(api.services)] == ["skipped"]
    (record,) = items_of(api.call("GET", "/v1/artifacts/a1/retries"))
    assert record["status"] == "succeeded"


def test_one_batch_can_end_several_retries(api: Api, clock: FakeClock) -> None:
    """Completions of several retried artifacts in one request end all their retries together."""
    for artifact_id in ("a1", "a2", "a3"):
        failed_artifact(api, clock, artifact_id)
        accepted_retry(api, artifact_id)
    clock.advance(1000)
    now = clock.now_ms()
    post_events(api, *(ev("artifact_completed", a, now, organization_id=ORG) for a in ("a1", "a2", "a3")))
    for artifact_id in ("a1", "a2", "a3"):
        detail = artifact(api, artifact_id)
        assert detail["status"] == "completed"
        assert [r["status"] for r in detail["retries"]] == ["succeeded"]
