"""Every rule of SPEC 3 an incoming event must meet: refused with the field named and a code.

Most cases go through :func:`validate_event` directly (pure, no database); a few go through
``POST /v1/events`` to show the per-item ``rejected`` report carries the same fields and codes.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pytest

from tests.conftest import NOW_MS, Api
from tests.helpers import ev
from voicemon.domain.counters import PLATFORM_SCOPE, bucket_deltas
from voicemon.domain.events import Event, FieldError, ValidationContext, validate_event
from voicemon.domain.model import RESERVED_TYPES, SYSTEM_TYPES, EventType, Stage, Status
from voicemon.domain.periods import Period, complete_periods, touched_periods
from voicemon.domain.timeutil import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    TimeParseError,
    floor_to,
    format_time,
    parse_time,
)
from voicemon.storage.events import count_events

RETENTION_MS = 48 * HOUR_MS
CTX = ValidationContext(
    now_ms=NOW_MS,
    event_retention_ms=RETENTION_MS,
    scope_organization_id=None,
    new_event_id=lambda ms: f"generated-{ms}",
)

KNOWN_INT_KEYS = (
    "claim_count",
    "entity_count",
    "auto_resolved_count",
    "disambiguation_count",
    "draft_count",
    "transcript_word_count",
    "retry_attempt",
)
KNOWN_STRING_KEYS = ("ai_model", "source_channel", "prompt_version")
ID_FIELDS = ("event_id", "artifact_id", "organization_id", "voice_note_id", "coach_user_id")


def base(**fields: Any) -> dict[str, Any]:
    """A valid event (a transcription completion of a1), with ``fields`` replacing or adding keys."""
    body: dict[str, Any] = {
        "event_id": "ev-1",
        "event_type": "transcription_completed",
        "artifact_id": "a1",
        "timestamp": format_time(NOW_MS - MINUTE_MS),
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def ok(raw: dict[str, Any], ctx: ValidationContext = CTX) -> Event:
    outcome = validate_event(raw, ctx)
    assert isinstance(outcome, Event), outcome
    return outcome


def errors(raw: object, ctx: ValidationContext = CTX) -> list[tuple[str, str]]:
    outcome = validate_event(raw, ctx)
    assert isinstance(outcome, list), f"accepted: {outcome}"
    assert outcome, "a rejection must say why"
    for e in outcome:
        assert isinstance(e, FieldError)
        assert e.code, e
        assert e.message, e
    return [(e.field, e.code) for e in outcome]


def test_a_plain_valid_event_is_accepted_with_its_values() -> None:
    event = ok(base(organization_id="o1", duration_ms=1500, metadata={"confidence_score": 0.5}))
    assert event.event_id == "ev-1"
    assert event.event_type is EventType.TRANSCRIPTION_COMPLETED
    assert event.artifact_id == "a1"
    assert event.organization_id == "o1"
    assert event.pipeline_stage is Stage.TRANSCRIPTION
    assert event.timestamp_ms == NOW_MS - MINUTE_MS
    assert event.received_ms == NOW_MS
    assert event.duration_ms == 1500
    assert event.confidence == 0.5


def test_an_item_that_is_not_an_object_is_refused() -> None:
    for raw in ([], "x", 3, None, [base()]):
        assert errors(raw) == [("", "invalid_type")], raw


# --- event_type and artifact_id ---------------------------------------------------------------------


def test_event_type_is_required() -> None:
    assert errors(base(event_type=_DROP)) == [("event_type", "required")]
    assert errors(base(event_type=None)) == [("event_type", "required")]


@pytest.mark.parametrize(
    "value", ["not_a_type", "Transcription_Completed", "", 7, True, ["artifact_received"]]
)
def test_event_type_must_be_one_of_the_27(value: object) -> None:
    assert errors(base(event_type=value)) == [("event_type", "invalid_enum")]


def test_all_27_types_are_known() -> None:
    assert len(EventType) == 27
    for kind in EventType:
        if kind in RESERVED_TYPES:
            continue
        fields: dict[str, Any] = {"event_type": kind.value}
        if kind is EventType.ARTIFACT_STATUS_CHANGED:
            fields["new_status"] = "processing"
        assert ok(base(**fields)).event_type is kind


@pytest.mark.parametrize(
    "kind",
    [
        t
        for t in EventType
        if t not in SYSTEM_TYPES | RESERVED_TYPES and t is not EventType.ARTIFACT_STATUS_CHANGED
    ],
)
def test_artifact_id_is_required_for_artifact_types(kind: EventType) -> None:
    assert errors(base(event_type=kind.value, artifact_id=_DROP)) == [("artifact_id", "required")]


def test_artifact_id_is_optional_for_the_system_types_only() -> None:
    system = {
        "circuit_breaker_opened",
        "circuit_breaker_closed",
        "budget_threshold_reached",
        "budget_exceeded",
        "rate_limit_hit",
    }
    assert {t.value for t in SYSTEM_TYPES} == system
    for kind in sorted(system):
        event = ok(base(event_type=kind, artifact_id=_DROP))
        assert event.artifact_id is None
        assert event.pipeline_stage is None
    # Retry events are about one artifact (not system types), and voicemon's own: refused at ingest.
    assert errors(base(event_type="retry_initiated", artifact_id=_DROP)) == [
        ("event_type", "reserved_type"),
        ("artifact_id", "required"),
    ]
    for kind in ("retry_initiated", "retry_succeeded", "retry_failed"):
        assert errors(base(event_type=kind)) == [("event_type", "reserved_type")]


# --- strings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*ID_FIELDS, "error_code"])
def test_id_like_strings_hold_at_most_128_characters(name: str) -> None:
    assert getattr(ok(base(**{name: "x" * 128})), name) == "x" * 128
    assert errors(base(**{name: "x" * 129})) == [(name, "too_long")]


@pytest.mark.parametrize("name", [*ID_FIELDS, "error_code", "error_message"])
def test_strings_must_not_be_empty_and_must_be_strings(name: str) -> None:
    assert errors(base(**{name: ""})) == [(name, "empty")]
    assert errors(base(**{name: 12})) == [(name, "invalid_type")]
    assert errors(base(**{name: {"a": 1}})) == [(name, "invalid_type")]


def test_error_message_holds_2000_characters() -> None:
    assert ok(base(error_message="m" * 2000)).error_message == "m" * 2000
    assert errors(base(error_message="m" * 2001)) == [("error_message", "too_long")]


def test_strings_are_stored_as_given_without_trimming() -> None:
    event = ok(base(artifact_id="  a 1 ", organization_id="Org\tA", error_message=" boom \n"))
    assert event.artifact_id == "  a 1 "
    assert event.organization_id == "Org\tA"
    assert event.error_message == " boom \n"


def test_length_counts_characters_not_bytes() -> None:
    assert ok(base(artifact_id="é" * 128)).artifact_id == "é" * 128
    assert errors(base(artifact_id="é" * 129)) == [("artifact_id", "too_long")]


# --- pipeline_stage ---------------------------------------------------------------------------------


def test_stage_is_derived_from_the_type_when_absent() -> None:
    expected = {
        "artifact_received": Stage.INGESTION,
        "transcription_started": Stage.TRANSCRIPTION,
        "claims_extracted": Stage.CLAIMS_EXTRACTION,
        "entity_needs_disambiguation": Stage.ENTITY_RESOLUTION,
        "draft_generation_failed": Stage.DRAFT_GENERATION,
        "draft_rejected": Stage.CONFIRMATION,
    }
    for kind, stage in expected.items():
        assert ok(base(event_type=kind)).pipeline_stage is stage, kind
        assert ok(base(event_type=kind, pipeline_stage=stage.value)).pipeline_stage is stage, kind


def test_a_stage_that_contradicts_the_type_is_refused() -> None:
    assert errors(base(event_type="transcription_completed", pipeline_stage="claims_extraction")) == [
        ("pipeline_stage", "stage_mismatch")
    ]
    assert errors(base(event_type="artifact_received", pipeline_stage="transcription")) == [
        ("pipeline_stage", "stage_mismatch")
    ]
    assert errors(base(event_type="draft_confirmed", pipeline_stage="draft_generation")) == [
        ("pipeline_stage", "stage_mismatch")
    ]


def test_a_stage_is_kept_when_the_type_has_none() -> None:
    for kind in ("artifact_completed", "artifact_failed", "circuit_breaker_opened"):
        assert ok(base(event_type=kind, pipeline_stage="draft_generation")).pipeline_stage is (
            Stage.DRAFT_GENERATION
        )
        assert ok(base(event_type=kind)).pipeline_stage is None
    changed = ok(
        base(event_type="artifact_status_changed", new_status="processing", pipeline_stage="ingestion")
    )
    assert changed.pipeline_stage is Stage.INGESTION


def test_an_unknown_stage_is_refused() -> None:
    assert errors(base(event_type="artifact_failed", pipeline_stage="billing")) == [
        ("pipeline_stage", "invalid_enum")
    ]
    assert errors(base(pipeline_stage=3)) == [("pipeline_stage", "invalid_enum")]


# --- time -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected_ms"),
    [
        (format_time(NOW_MS - HOUR_MS), NOW_MS - HOUR_MS),
        (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS),
        (NOW_MS - HOUR_MS + 7, NOW_MS - HOUR_MS + 7),
    ],
)
def test_timestamp_accepts_rfc3339_with_offset_and_epoch_ms(given: object, expected_ms: int) -> None:
    assert ok(base(timestamp=given)).timestamp_ms == expected_ms


def test_timestamp_with_a_non_utc_offset_is_converted_to_utc() -> None:
    utc = format_time(NOW_MS - HOUR_MS)  # "...T01:40:00.000Z"
    day, clock_time = utc[:-1].split("T")
    hours = int(clock_time[:2])
    shifted = f"{day}T{hours + 2:02d}{clock_time[2:]}+02:00"
    assert ok(base(timestamp=shifted)).timestamp_ms == NOW_MS - HOUR_MS


def test_timestamp_defaults_to_the_receive_time() -> None:
    assert ok(base(timestamp=_DROP)).timestamp_ms == NOW_MS
    assert ok(base(timestamp=None)).timestamp_ms == NOW_MS


@pytest.mark.parametrize("name", ["timestamp", "stage_started_at", "stage_completed_at"])
def test_naive_times_are_refused(name: str) -> None:
    naive = format_time(NOW_MS - HOUR_MS)[:-1]  # the same time without its "Z"
    assert errors(base(**{name: naive})) == [(name, "naive_time")]
    assert errors(base(**{name: naive[:10]})) == [(name, "naive_time")]


@pytest.mark.parametrize(
    "garbage",
    [
        "yesterday",
        "",
        "13:05",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        str(NOW_MS),
        1.5e12,
        True,
        [],
        {},
    ],
)
@pytest.mark.parametrize("name", ["timestamp", "stage_started_at", "stage_completed_at"])
def test_garbage_times_are_refused(name: str, garbage: object) -> None:
    assert errors(base(**{name: garbage})) == [(name, "invalid_time")]


def test_timestamp_more_than_5_minutes_in_the_future_is_refused() -> None:
    assert ok(base(timestamp=NOW_MS + 5 * MINUTE_MS)).timestamp_ms == NOW_MS + 5 * MINUTE_MS
    assert errors(base(timestamp=NOW_MS + 5 * MINUTE_MS + 1)) == [("timestamp", "in_future")]
    assert errors(base(timestamp=format_time(NOW_MS + HOUR_MS))) == [("timestamp", "in_future")]


def test_timestamp_older_than_raw_retention_is_refused() -> None:
    assert ok(base(timestamp=NOW_MS - RETENTION_MS)).timestamp_ms == NOW_MS - RETENTION_MS
    assert errors(base(timestamp=NOW_MS - RETENTION_MS - 1)) == [("timestamp", "too_old")]
    assert errors(base(timestamp=format_time(NOW_MS - 30 * DAY_MS))) == [("timestamp", "too_old")]
    # The retention comes from the context (the settings), not from a constant.
    short = ValidationContext(NOW_MS, 2 * HOUR_MS, None, CTX.new_event_id)
    assert errors(base(timestamp=NOW_MS - 3 * HOUR_MS), short) == [("timestamp", "too_old")]


def test_stage_times_are_parsed_and_must_be_in_order() -> None:
    started, completed = NOW_MS - 2 * MINUTE_MS, NOW_MS - MINUTE_MS
    event = ok(base(stage_started_at=format_time(started), stage_completed_at=completed))
    assert (event.stage_started_at_ms, event.stage_completed_at_ms) == (started, completed)
    assert event.duration_ms == completed - started
    assert errors(base(stage_started_at=completed, stage_completed_at=started)) == [
        ("stage_completed_at", "before_start")
    ]


# --- duration_ms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 0.5, 1234.25, 86_399_999, 86_399_999.5])
def test_duration_within_a_day_is_accepted(value: float) -> None:
    assert ok(base(duration_ms=value)).duration_ms == value


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (-1, "out_of_range"),
        (-0.001, "out_of_range"),
        (86_400_000, "out_of_range"),
        (10**12, "out_of_range"),
        (True, "invalid_type"),
        (False, "invalid_type"),
        ("100", "invalid_type"),
        ([100], "invalid_type"),
        ({"ms": 1}, "invalid_type"),
        (float("inf"), "not_finite"),
        (float("-inf"), "not_finite"),
        (float("nan"), "not_finite"),
    ],
)
def test_bad_durations_are_refused(value: object, code: str) -> None:
    assert errors(base(duration_ms=value)) == [("duration_ms", code)]


# --- NaN and Infinity -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"confidence_score": None}, "metadata.confidence_score"),
        ({"ai_cost_usd": None}, "metadata.ai_cost_usd"),
        ({"transcript_duration_s": None}, "metadata.transcript_duration_s"),
        ({"custom": None}, "metadata.custom"),
        ({"outer": {"inner": None}}, "metadata.outer.inner"),
        ({"outer": {"list": [1, "x", None]}}, "metadata.outer.list.2"),
        ({"l": [[0.5, None]]}, "metadata.l.0.1"),
    ],
)
def test_non_finite_numbers_are_refused_anywhere_in_metadata(
    bad: float, metadata: dict[str, Any], field: str
) -> None:
    filled = _replace_none(metadata, bad)
    assert errors(base(metadata=filled)) == [(field, "not_finite")]


def _replace_none(value: Any, bad: float) -> Any:
    if value is None:
        return bad
    if isinstance(value, dict):
        return {k: _replace_none(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_none(v, bad) for v in value]
    return value


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_integer_keys_are_refused_as_non_integers(bad: float) -> None:
    for key in KNOWN_INT_KEYS:
        assert errors(base(metadata={key: bad})) == [(f"metadata.{key}", "invalid_type")]


def test_a_body_with_an_overflowing_number_is_not_stored(api: Api) -> None:
    """``1e400`` would decode to inf with a lenient parser; the API refuses the body."""
    raw = '{"event_type": "transcription_completed", "artifact_id": "a1", "duration_ms": 1e400}'
    r = api.call("POST", "/v1/events", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = '{"event_type": "artifact_received", "artifact_id": "a1", "metadata": {"x": ' + literal + "}}"
        r = api.call("POST", "/v1/events", content=raw.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (literal, r.text)
    with api.services.db.read() as conn:
        assert count_events(conn) == 0


# --- metadata ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [[], [1, 2], "x", 3, True, 0.5])
def test_metadata_must_be_an_object(value: object) -> None:
    assert errors(base(metadata=value)) == [("metadata", "invalid_type")]


def test_metadata_is_at_most_8_kib_as_json() -> None:
    # {"p":"..."} is 8 bytes of JSON around the string.
    at_limit = {"p": "x" * (8 * 1024 - 8)}
    assert ok(base(metadata=at_limit)).metadata == at_limit
    assert errors(base(metadata={"p": "x" * (8 * 1024 - 7)})) == [("metadata", "too_large")]
    assert errors(base(metadata={f"k{i}": i for i in range(2000)})) == [("metadata", "too_large")]


@pytest.mark.parametrize("key", KNOWN_INT_KEYS)
def test_known_integer_keys_are_integers_at_least_0(key: str) -> None:
    assert ok(base(metadata={key: 0})).metadata == {key: 0}
    assert ok(base(metadata={key: 12})).metadata == {key: 12}
    for bad, code in (
        (-1, "out_of_range"),
        (1.5, "invalid_type"),
        (True, "invalid_type"),
        ("3", "invalid_type"),
    ):
        assert errors(base(metadata={key: bad})) == [(f"metadata.{key}", code)], bad


def test_counts_reach_the_event() -> None:
    event = ok(base(metadata={"claim_count": 3, "entity_count": 4, "draft_count": 5}))
    assert (event.claim_count, event.entity_count, event.draft_count) == (3, 4, 5)


def test_confidence_score_is_between_0_and_1() -> None:
    for good in (0, 0.0, 0.42, 1, 1.0):
        assert ok(base(metadata={"confidence_score": good})).confidence == good
    for bad, code in ((-0.01, "out_of_range"), (1.0001, "out_of_range"), (2, "out_of_range")):
        assert errors(base(metadata={"confidence_score": bad})) == [("metadata.confidence_score", code)]
    for bad in ("0.5", True, [0.5]):
        assert errors(base(metadata={"confidence_score": bad})) == [
            ("metadata.confidence_score", "invalid_type")
        ]


@pytest.mark.parametrize("key", ["ai_cost_usd", "transcript_duration_s"])
def test_cost_and_transcript_duration_are_at_least_0(key: str) -> None:
    assert ok(base(metadata={key: 0})).metadata == {key: 0}
    assert ok(base(metadata={key: 12.5})).metadata == {key: 12.5}
    assert errors(base(metadata={key: -0.0001})) == [(f"metadata.{key}", "out_of_range")]
    assert errors(base(metadata={key: "1"})) == [(f"metadata.{key}", "invalid_type")]
    assert errors(base(metadata={key: False})) == [(f"metadata.{key}", "invalid_type")]


def test_cost_is_kept_exactly_in_nano_dollars() -> None:
    assert ok(base(metadata={"ai_cost_usd": 0.000000001})).cost_nusd == 1
    assert ok(base(metadata={"ai_cost_usd": 0.1})).cost_nusd == 100_000_000
    assert ok(base()).cost_nusd == 0


@pytest.mark.parametrize("key", KNOWN_STRING_KEYS)
def test_known_string_keys_hold_at_most_128_characters(key: str) -> None:
    assert ok(base(metadata={key: "m" * 128})).metadata == {key: "m" * 128}
    assert errors(base(metadata={key: "m" * 129})) == [(f"metadata.{key}", "too_long")]
    assert errors(base(metadata={key: 5})) == [(f"metadata.{key}", "invalid_type")]


def test_unknown_metadata_keys_are_kept_as_given() -> None:
    given = {
        "custom": {"nested": [1, "two", None, {"deep": True}]},
        "weird key ✓": "  spaced  ",
        "ratio": 1.5,
        "big": 10**15,
        "confidence_score": 0.25,
    }
    event = ok(base(metadata=given))
    assert event.metadata == given


def test_unknown_metadata_keys_come_back_from_the_api_as_given(api: Api) -> None:
    given = {"custom": {"nested": [1, "two", None, {"deep": True}]}, "ratio": 1.5, "empty": {}, "s": ""}
    body = ev("artifact_received", "meta-1", NOW_MS - MINUTE_MS, metadata=given)
    r = api.call("POST", "/v1/events", json=body)
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    items = api.call("GET", "/v1/events?artifact_id=meta-1").json()["items"]
    assert [i["metadata"] for i in items] == [given]


# --- other fields -----------------------------------------------------------------------------------


def test_unknown_top_level_fields_are_refused_by_name() -> None:
    assert errors(base(colour="blue")) == [("colour", "unknown_field")]
    assert sorted(errors(base(colour="blue", Event_Type="x"))) == [
        ("Event_Type", "unknown_field"),
        ("colour", "unknown_field"),
    ]


def test_new_status_is_required_for_status_changes() -> None:
    assert errors(base(event_type="artifact_status_changed")) == [("new_status", "required")]
    assert errors(base(event_type="artifact_status_changed", new_status="stuck")) == [
        ("new_status", "invalid_enum")
    ]
    event = ok(
        base(event_type="artifact_status_changed", new_status="processing", previous_status="received")
    )
    assert event.previous_status is Status.RECEIVED
    assert event.new_status is Status.PROCESSING
    assert errors(base(previous_status="done")) == [("previous_status", "invalid_enum")]


def test_event_ids_are_generated_when_absent() -> None:
    assert ok(base(event_id=_DROP)).event_id == f"generated-{NOW_MS}"


def test_a_scoped_key_may_only_write_its_own_organization() -> None:
    scoped = ValidationContext(NOW_MS, RETENTION_MS, "org-a", CTX.new_event_id)
    assert ok(base(), scoped).organization_id == "org-a"
    assert ok(base(organization_id="org-a"), scoped).organization_id == "org-a"
    assert errors(base(organization_id="org-b"), scoped) == [("organization_id", "forbidden_organization")]


def test_every_broken_rule_of_one_item_is_reported() -> None:
    raw = {
        "event_type": "transcription_completed",
        "pipeline_stage": "claims_extraction",
        "artifact_id": "a" * 129,
        "organization_id": "",
        "timestamp": "2026-01-01T00:00:00",
        "duration_ms": -5,
        "error_message": "e" * 2001,
        "metadata": {"claim_count": -1, "confidence_score": 7, "ai_model": 3, "x": float("nan")},
        "extra": 1,
    }
    assert sorted(errors(raw)) == sorted(
        [
            ("extra", "unknown_field"),
            ("artifact_id", "too_long"),
            ("organization_id", "empty"),
            ("pipeline_stage", "stage_mismatch"),
            ("timestamp", "naive_time"),
            ("duration_ms", "out_of_range"),
            ("error_message", "too_long"),
            ("metadata.claim_count", "out_of_range"),
            ("metadata.confidence_score", "out_of_range"),
            ("metadata.ai_model", "invalid_type"),
            ("metadata.x", "not_finite"),
        ]
    )


# --- the same rules through HTTP --------------------------------------------------------------------


def test_the_http_report_names_field_and_code_per_item(api: Api) -> None:
    t = NOW_MS - MINUTE_MS
    batch = [
        ev("artifact_received", "h0", t),
        ev("artifact_received", None, t),
        ev("transcription_completed", "h2", t, pipeline_stage="draft_generation"),
        ev("artifact_received", "h3", None, timestamp="2026-11-28T13:05:00"),
        ev("artifact_received", "h4", t, duration_ms=-1, metadata={"confidence_score": 1.5}),
        ev("artifact_status_changed", "h5", t),
        ev("artifact_received", "h6", t, metadata=[1]),
        ev("artifact_received", "x" * 129, t, note="hi"),
        ev("rate_limit_hit", None, t),
        ev("artifact_received", "h9", t, metadata={"p": "x" * 9000}),
    ]
    r = api.call("POST", "/v1/events", json={"events": batch})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    report = {item["index"]: item for item in body["rejected"]}
    assert set(report) == {1, 2, 3, 4, 5, 6, 7, 9}
    got = {i: sorted((e["field"], e["code"]) for e in item["errors"]) for i, item in report.items()}
    assert got == {
        1: [("artifact_id", "required")],
        2: [("pipeline_stage", "stage_mismatch")],
        3: [("timestamp", "naive_time")],
        4: [("duration_ms", "out_of_range"), ("metadata.confidence_score", "out_of_range")],
        5: [("new_status", "required")],
        6: [("metadata", "invalid_type")],
        7: [("artifact_id", "too_long"), ("note", "unknown_field")],
        9: [("metadata", "too_large")],
    }
    for i, item in report.items():
        assert item["event_id"] == batch[i]["event_id"]
        assert all(isinstance(e["message"], str) and e["message"] for e in item["errors"])
    stored = api.call("GET", "/v1/events?limit=500").json()["items"]
    assert sorted(e["event_id"] for e in stored) == sorted([batch[0]["event_id"], batch[8]["event_id"]])


def test_a_rejected_item_without_a_string_event_id_reports_null(api: Api) -> None:
    r = api.call("POST", "/v1/events", json={"events": [{"event_type": "nope", "event_id": 5}, "x"]})
    assert r.status_code == 200, r.text
    rejected = r.json()["rejected"]
    assert [(x["index"], x["event_id"]) for x in rejected] == [(0, None), (1, None)]
    assert sorted((e["field"], e["code"]) for e in rejected[0]["errors"]) == [
        ("event_id", "invalid_type"),
        ("event_type", "invalid_enum"),
    ]
    assert [(e["field"], e["code"]) for e in rejected[1]["errors"]] == [("", "invalid_type")]


# --- parse_time and format_time ---------------------------------------------------------------------


def test_parse_time_converts_offsets_to_utc() -> None:
    utc = parse_time("2026-11-28T11:05:00Z")
    assert parse_time("2026-11-28T13:05:00+02:00") == utc
    assert parse_time("2026-11-28T05:35:00-05:30") == utc
    assert parse_time("2026-11-28T11:05:00+00:00") == utc
    assert parse_time("2026-11-29T00:05:00+13:00") == utc
    assert utc == 1_795_863_900_000
    assert parse_time(utc) == utc


def test_parse_time_keeps_milliseconds() -> None:
    assert parse_time("2026-11-28T11:05:00.123Z") == 1_795_863_900_123
    assert parse_time("2026-11-28T11:05:00.5Z") == 1_795_863_900_500
    assert parse_time("2026-11-28T13:05:00.250+02:00") == 1_795_863_900_250


def test_parse_time_accepts_lower_case_rfc3339_separators() -> None:
    """RFC 3339 section 5.6: "T" and "Z" may be lower case."""
    assert parse_time("2026-11-28t11:05:00z") == 1_795_863_900_000
    assert parse_time("2026-11-28T11:05:00.123z") == 1_795_863_900_123


def test_parse_time_refuses_naive_and_garbage() -> None:
    with pytest.raises(TimeParseError) as naive:
        parse_time("2026-11-28T11:05:00")
    assert naive.value.code == "naive_time"
    for garbage in ("nope", "", "2026-11-28T11:05:00Q", -1, 2**63, 1.0, None, True):
        with pytest.raises(TimeParseError) as exc:
            parse_time(garbage)
        assert exc.value.code == "invalid_time", garbage


def test_format_time_is_utc_with_z_and_milliseconds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1_795_863_900_000) == "2026-11-28T11:05:00.000Z"
    assert format_time(1_795_863_900_007) == "2026-11-28T11:05:00.007Z"
    assert format_time(1_795_863_900_999) == "2026-11-28T11:05:00.999Z"
    for ms in (0, 1, 999, 1_000, NOW_MS, NOW_MS + 123, 253_402_300_799_999):
        text = format_time(ms)
        assert text.endswith("Z")
        assert len(text) == len("2026-11-28T11:05:00.000Z")
        assert text[19] == "."
        assert parse_time(text) == ms


def test_parse_of_format_round_trips_through_an_offset() -> None:
    assert format_time(parse_time("2026-11-28T13:05:00.040+02:00")) == "2026-11-28T11:05:00.040Z"
    assert format_time(parse_time("2026-12-31T23:30:00-01:00")) == "2027-01-01T00:30:00.000Z"


# --- no local time ----------------------------------------------------------------------------------


def _bucketing_facts() -> dict[str, Any]:
    """Everything that places an event in a minute, hour or day, for events around UTC boundaries."""
    day = floor_to(NOW_MS, DAY_MS)
    times = [day - 1, day, day + 30 * MINUTE_MS - 1, day + 30 * MINUTE_MS, NOW_MS - 1, NOW_MS - 5 * HOUR_MS]
    events = [
        ok(base(event_id=f"tz-{i}", event_type="artifact_received", timestamp=t)) for i, t in enumerate(times)
    ]
    # the same instants given with the +05:30 offset, as a Kolkata pipeline would send them
    local = [format_time(t + 5 * HOUR_MS + 30 * MINUTE_MS)[:-1] + "+05:30" for t in times]
    return {
        "parsed_local": [ok(base(timestamp=text)).timestamp_ms for text in local],
        "naive": errors(base(timestamp=format_time(NOW_MS)[:-1])),
        "formatted": [format_time(t) for t in times],
        "minutes": [floor_to(t, MINUTE_MS) for t in times],
        "hours": [floor_to(t, HOUR_MS) for t in times],
        "days": [floor_to(t, DAY_MS) for t in times],
        "periods": touched_periods(events),
        "buckets": sorted(
            (d.scope, d.minute_ms, tuple(sorted(d.counts.items()))) for d in bucket_deltas(events)
        ),
        "complete_hours": complete_periods(Period.HOURLY, NOW_MS - 6 * HOUR_MS, NOW_MS),
        "complete_days": complete_periods(Period.DAILY, NOW_MS - 3 * DAY_MS, NOW_MS),
    }


def test_bucketing_does_not_depend_on_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    in_utc = _bucketing_facts()
    day = floor_to(NOW_MS, DAY_MS)
    assert format_time(day).endswith("T00:00:00.000Z")
    assert day > NOW_MS - 5 * HOUR_MS  # NOW_MS is early in its UTC day
    assert in_utc["days"] == [day - DAY_MS, day, day, day, day, day - DAY_MS]
    assert in_utc["parsed_local"][1] == day
    assert in_utc["naive"] == [("timestamp", "naive_time")]
    assert (PLATFORM_SCOPE, floor_to(NOW_MS - 1, MINUTE_MS)) in {(b[0], b[1]) for b in in_utc["buckets"]}
    try:
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        # The switch took effect: local time is 5:30 ahead of UTC (a half-hour offset catches hour floors).
        assert time.timezone == -(5 * 3600 + 30 * 60)
        assert time.localtime(NOW_MS // 1000).tm_hour != time.gmtime(NOW_MS // 1000).tm_hour
        assert _bucketing_facts() == in_utc
    finally:
        monkeypatch.undo()
        time.tzset()
    assert os.environ.get("TZ") != "Asia/Kolkata"


def test_a_non_finite_number_never_reaches_an_event() -> None:
    """Belt and braces: whatever validate_event accepts carries only finite numbers."""
    for value in (float("inf"), float("nan"), 1e308 * 10):
        outcome = validate_event(base(duration_ms=value, metadata={"ai_cost_usd": value}), CTX)
        assert isinstance(outcome, list)
        assert ("duration_ms", "not_finite") in [(e.field, e.code) for e in outcome]
    event = ok(base(duration_ms=1e-300, metadata={"confidence_score": 5e-324}))
    assert event.duration_ms is not None
    assert math.isfinite(event.duration_ms)
