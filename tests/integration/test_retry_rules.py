"""Which retries are refused (SPEC 9), through HTTP on both databases: the stage rule, stuck artifacts, a
missing retry handler, and the order the refusals are checked in.

A stage retry may start at the stage the artifact failed in (or, stuck, is in) or before it, never after:
the stages it would skip never produced their output. Every refusal is checked against the full contents
of every table, before and after (``assert_refused``).
"""

from __future__ import annotations

import pytest

from tests.conftest import STAFF, Api
from tests.helpers import ev, items_of
from tests.integration import test_retries
from tests.integration.test_retries import (
    ORG,
    accepted_retry,
    artifact,
    assert_refused,
    failed_artifact,
    outbox_rows,
    post_events,
    retry,
    timeline_of,
)
from voicemon.clock import FakeClock
from voicemon.domain.retries import MAX_RETRIES_PER_HOUR
from voicemon.domain.timeutil import MINUTE_MS, SECOND_MS
from voicemon.errors import UnavailableError
from voicemon.service import Services
from voicemon.service.retries import RetryCommand
from voicemon.settings import Settings

# The pipeline in order, as this test reads SPEC 9 (the code has its own table).
ORDER = [
    "ingestion",
    "transcription",
    "claims_extraction",
    "entity_resolution",
    "draft_generation",
    "confirmation",
]
# The services of test_retries: an in-process handler that records the commands it receives.
pipeline = test_retries.pipeline
with_handler = test_retries.with_handler
services = test_retries.services

RETRY_STAGES = ["transcription", "claims_extraction", "entity_resolution", "draft_generation", "full"]
UNKNOWN = None


def may_start(stage: str, reached: str | None) -> bool:
    """The rule, written out: full always; a stage retry only at or before the stage reached."""
    if stage == "full":
        return True
    return reached is not None and ORDER.index(stage) <= ORDER.index(reached)


def failed_in(api: Api, clock: FakeClock, artifact_id: str, stage: str | None) -> None:
    """An artifact that failed 8 minutes ago in ``stage`` (None: with no stage known at all)."""
    now = clock.now_ms()
    if stage is UNKNOWN:
        # No receipt (it would give the stage ingestion) and a failure that names no stage.
        post_events(api, ev("artifact_failed", artifact_id, now - 8 * MINUTE_MS, error_message="lost"))
    else:
        failure = f"{stage}_failed" if stage in RETRY_STAGES else "artifact_failed"
        post_events(
            api,
            ev("artifact_received", artifact_id, now - 10 * MINUTE_MS),
            ev(failure, artifact_id, now - 8 * MINUTE_MS, pipeline_stage=stage, error_message="boom"),
        )
    detail = artifact(api, artifact_id)
    assert (detail["status"], detail["failed_stage"]) == ("failed", stage)


# The event that leaves an artifact active in each stage (received: ingestion; a status change naming no
# stage and no receipt: none known).
ACTIVE_IN = {
    "ingestion": lambda a, ts: [ev("artifact_received", a, ts)],
    "transcription": lambda a, ts: [ev("transcription_started", a, ts)],
    "claims_extraction": lambda a, ts: [ev("claims_extraction_started", a, ts)],
    "entity_resolution": lambda a, ts: [ev("entity_resolution_started", a, ts)],
    "draft_generation": lambda a, ts: [ev("draft_generation_started", a, ts)],
    "confirmation": lambda a, ts: [
        ev("artifact_status_changed", a, ts, new_status="processing", pipeline_stage="confirmation")
    ],
    UNKNOWN: lambda a, ts: [ev("artifact_status_changed", a, ts, new_status="processing")],
}


def stuck_in(api: Api, clock: FakeClock, artifact_id: str, stage: str | None) -> None:
    """An artifact active in ``stage`` whose last event was 7 minutes ago: stuck (threshold 5 minutes)."""
    post_events(api, *ACTIVE_IN[stage](artifact_id, clock.now_ms() - 7 * MINUTE_MS))
    detail = artifact(api, artifact_id)
    assert detail["stuck"] is True, detail
    assert detail["current_stage"] == stage


# --- the stage rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["failed", "stuck"])
def test_every_pair_of_stage_reached_and_stage_asked_follows_the_rule(
    api: Api, clock: FakeClock, origin: str
) -> None:
    """Every pair (stage reached, retry asked), seven stages (one of them unknown) by five retries, one
    artifact each: accepted exactly when :func:`may_start` says so, else refused ``stage_after_failure``
    with no trace."""
    make = failed_in if origin == "failed" else stuck_in
    for reached in [*ORDER, UNKNOWN]:
        for stage in RETRY_STAGES:
            artifact_id = f"{reached or 'unknown'}-{stage}"
            make(api, clock, artifact_id, reached)
            if may_start(stage, reached):
                record = accepted_retry(api, artifact_id, stage)
                assert (record["stage"], record["from_status"]) == (stage, origin)
            else:
                error = assert_refused(
                    api,
                    lambda: retry(api, artifact_id, stage),  # noqa: B023 (called at once)
                    409,
                    "stage_after_failure",
                )
                if reached is UNKNOWN:
                    assert "unknown, so only a full retry is accepted" in error["message"], error
                else:
                    assert reached in error["message"], error


def test_a_retry_after_the_failed_stage_is_refused_and_one_before_it_accepted(
    api: Api, clock: FakeClock
) -> None:
    failed_in(api, clock, "early", "transcription")
    error = assert_refused(api, lambda: retry(api, "early", "draft_generation"), 409, "stage_after_failure")
    assert error["message"].startswith("artifact failed in transcription: a draft_generation retry")
    assert "never produced their output" in error["message"]
    assert error["message"].endswith("(accepted: transcription, full)")
    assert items_of(api.call("GET", "/v1/artifacts/early/retries")) == []
    # The failed stage itself is accepted, and so is an earlier stage of another artifact.
    assert accepted_retry(api, "early", "transcription")["from_status"] == "failed"
    failed_in(api, clock, "late", "entity_resolution")
    record = accepted_retry(api, "late", "claims_extraction")
    assert (record["stage"], record["from_status"]) == ("claims_extraction", "failed")
    assert artifact(api, "late")["status"] == "transcribed"


def test_an_unknown_failed_stage_accepts_only_full(api: Api, clock: FakeClock) -> None:
    failed_in(api, clock, "a1", UNKNOWN)
    for stage in RETRY_STAGES[:-1]:
        error = assert_refused(
            api,
            lambda: retry(api, "a1", stage),  # noqa: B023 (called at once)
            409,
            "stage_after_failure",
        )
        assert (
            error["message"]
            == "the stage this artifact failed in is unknown, so only a full retry is accepted"
        )
    record = accepted_retry(api, "a1", "full")
    assert (record["stage"], record["from_status"]) == ("full", "failed")
    assert artifact(api)["status"] == "received"


# --- stuck artifacts --------------------------------------------------------------------------------------


def test_a_stuck_artifact_is_retried_like_a_failed_one(
    api: Api, clock: FakeClock, pipeline: list[RetryCommand]
) -> None:
    now = clock.now_ms()
    post_events(
        api,
        ev("artifact_received", "a1", now - 10 * MINUTE_MS, voice_note_id="vn-1"),
        ev("transcription_started", "a1", now - 9 * MINUTE_MS),
        ev("transcription_completed", "a1", now - 8 * MINUTE_MS),
        ev("claims_extraction_started", "a1", now - 7 * MINUTE_MS),
    )
    [listed] = items_of(api.call("GET", "/v1/artifacts", params={"status": "stuck"}))
    assert (listed["artifact_id"], listed["status"], listed["current_stage"]) == (
        "a1",
        "processing",
        "claims_extraction",
    )
    # After its current stage: refused, with the stage it is stuck in named.
    error = assert_refused(api, lambda: retry(api, stage="entity_resolution"), 409, "stage_after_failure")
    assert error["message"].startswith("artifact is stuck in claims_extraction: a entity_resolution retry")
    # At its current stage: accepted, and the record says it started from a stuck artifact, everywhere.
    record = accepted_retry(api, stage="claims_extraction")
    assert (record["stage"], record["attempt"], record["status"], record["from_status"]) == (
        "claims_extraction",
        1,
        "pending",
        "stuck",
    )
    [listed_retry] = items_of(api.call("GET", "/v1/artifacts/a1/retries"))
    detail = artifact(api)
    assert listed_retry == detail["retries"][0] == record
    assert (detail["status"], detail["stuck"], detail["retry_count"]) == ("transcribed", False, 1)
    [initiated] = timeline_of(api, "retry_initiated")
    assert initiated["metadata"]["retry_stage"] == "claims_extraction"
    assert len(outbox_rows(api.services)) == 1
    assert api.services.dispatcher.run_once() == 1
    assert [(c.artifact_id, c.stage, c.voice_note_id) for c in pipeline] == [
        ("a1", "claims_extraction", "vn-1")
    ]


def test_an_active_artifact_that_is_not_stuck_is_409_not_failed(
    api: Api, clock: FakeClock, settings: Settings
) -> None:
    now = clock.now_ms()
    post_events(
        api,
        ev("artifact_received", "a1", now - 10 * MINUTE_MS),
        ev("transcription_started", "a1", now - settings.stuck_after_ms),
    )
    # Silent for exactly the threshold: not stuck yet (SPEC 4: longer than the threshold).
    assert artifact(api)["stuck"] is False
    error = assert_refused(api, lambda: retry(api), 409, "not_failed")
    assert error["message"] == "artifact is neither failed nor stuck (it is transcribing)"
    clock.advance(1)
    assert accepted_retry(api)["from_status"] == "stuck"


# --- no retry handler -------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_handler", [False])
def test_no_retry_handler_is_503_at_request_time_and_writes_nothing(api: Api, clock: FakeClock) -> None:
    """Refused when asked, not accepted and given up on minutes later: no record, no event, no reset, no
    outbox entry."""
    assert api.services.retry_transport is None
    failed_artifact(api, clock)
    stuck_in(api, clock, "s1", "transcription")
    for artifact_id, status in (("a1", "failed"), ("s1", "transcribing")):
        error = assert_refused(
            api,
            lambda: retry(api, artifact_id),  # noqa: B023 (called at once)
            503,
            "no_retry_handler",
        )
        assert "no retry handler is configured" in error["message"], error
        detail = artifact(api, artifact_id)
        assert (detail["status"], detail["retry_count"], detail["retries"]) == (status, 0, [])
        assert items_of(api.call("GET", f"/v1/artifacts/{artifact_id}/retries")) == []
        assert timeline_of(api, "retry_initiated", artifact_id) == []
    assert outbox_rows(api.services) == []
    # The same request once a handler is registered: accepted.
    api.services.set_retry_handler(lambda command: None)
    assert accepted_retry(api)["attempt"] == 1


# --- the order of the refusals ----------------------------------------------------------------------------


def test_refusals_with_a_retry_in_flight_come_in_the_order_of_spec_9(
    api: Api, clock: FakeClock, settings: Settings
) -> None:
    failed_artifact(api, clock)  # in transcription
    accepted_retry(api, stage="transcription")
    # Active again and not stuck: not_failed comes before retry_in_progress and the stage rule.
    assert_refused(api, lambda: retry(api, stage="draft_generation"), 409, "not_failed")
    # Stuck in transcription with its retry in flight, asked from a later stage: retry_in_progress wins.
    clock.advance(settings.stuck_after_ms + SECOND_MS)
    assert artifact(api)["stuck"] is True
    assert_refused(api, lambda: retry(api, stage="draft_generation"), 409, "retry_in_progress")


@pytest.mark.parametrize("with_handler", [False])
def test_refusals_without_a_handler_come_in_the_order_of_spec_9(api: Api, clock: FakeClock) -> None:
    assert_refused(api, lambda: retry(api, "nope", "draft_generation"), 404, "artifact_not_found")
    post_events(api, ev("artifact_received", "busy", clock.now_ms() - MINUTE_MS))
    assert_refused(api, lambda: retry(api, "busy", "draft_generation"), 409, "not_failed")
    failed_artifact(api, clock)  # in transcription
    # A later stage is refused for what it is, before the missing handler is reported.
    assert_refused(api, lambda: retry(api, stage="draft_generation"), 409, "stage_after_failure")
    assert_refused(api, lambda: retry(api, stage="transcription"), 503, "no_retry_handler")


def test_no_retry_handler_comes_before_the_rate_limit(api: Api, clock: FakeClock, settings: Settings) -> None:
    """Ten retries within the hour through a server with a handler; an eleventh through another server
    on the same database that has none is told so (503), not to wait (429)."""
    failed_artifact(api, clock)
    for attempt in range(1, MAX_RETRIES_PER_HOUR + 1):
        clock.advance(SECOND_MS)
        assert accepted_retry(api)["attempt"] == attempt
        clock.advance(SECOND_MS)
        post_events(api, ev("transcription_failed", "a1", clock.now_ms(), error_message=f"failure {attempt}"))
    assert_refused(api, lambda: retry(api), 429, "too_many_retries")
    bare = Services(settings, clock)
    try:
        with pytest.raises(UnavailableError) as refused:
            bare.retries.request(STAFF, "a1", "transcription", "ops", ORG)
        assert refused.value.code == "no_retry_handler"
    finally:
        bare.stop()
