"""The span → event mapping of SPEC 18, on its own: a pure function from spans to event objects."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemon.domain.otlp import STATUS_ERROR, STATUS_OK, STATUS_UNSET, Span, map_spans, span_events

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
MS = 1_000_000
START = 1_796_000_000_000 * MS


def span(name: str = "transcription", status: int = STATUS_UNSET, **attributes: Any) -> Span:
    attrs = {"voicemon.artifact_id": "a-1", **attributes}
    return Span(TRACE, SPAN, name, START, START + 2_500 * MS + 250_000, status, "", attrs)


def test_a_stage_span_is_its_start_and_its_completion() -> None:
    started, ended = span_events_of(span(**{"voicemon.organization_id": "org-a", "user.id": "coach-1"}))
    assert started == {
        "event_id": f"otlp-{TRACE}-{SPAN}-started",
        "event_type": "transcription_started",
        "timestamp": START // MS,
        "pipeline_stage": "transcription",
        "artifact_id": "a-1",
        "organization_id": "org-a",
        "coach_user_id": "coach-1",
    }
    assert ended["event_id"] == f"otlp-{TRACE}-{SPAN}-ended"
    assert ended["event_type"] == "transcription_completed"
    assert ended["duration_ms"] == 2500.25
    assert (ended["stage_started_at"], ended["stage_completed_at"]) == (START // MS, START // MS + 2500)
    assert "metadata" not in ended


def span_events_of(s: Span) -> list[dict[str, Any]]:
    found = span_events(s)
    assert isinstance(found, list), found
    return found


@pytest.mark.parametrize(
    ("name", "stage"),
    [
        ("claims_extraction", "claims_extraction"),
        ("Claims Extraction", "claims_extraction"),
        ("claims-extraction", "claims_extraction"),
        ("entity.resolution", "entity_resolution"),
        ("draft_generation", "draft_generation"),
    ],
)
def test_a_span_name_can_name_the_stage(name: str, stage: str) -> None:
    started, _ = span_events_of(
        Span(TRACE, SPAN, name, START, START, attributes={"voicemon.artifact_id": "a"})
    )
    assert started["pipeline_stage"] == stage


def test_an_error_status_is_the_stages_failure_with_its_code_and_message() -> None:
    exception = {"exception.type": "TimeoutError", "exception.message": "took too long"}
    base = Span(TRACE, SPAN, "x", START, START + MS, STATUS_ERROR, "", {"voicemon.artifact_id": "a",
                "voicemon.stage": "draft_generation"}, exceptions=[exception])  # fmt: skip
    _, failed = span_events_of(base)
    assert failed["event_type"] == "draft_generation_failed"
    assert (failed["error_code"], failed["error_message"]) == ("TimeoutError", "took too long")
    typed = Span(
        **{
            **_fields(base),
            "status_message": "gave up",
            "attributes": {**base.attributes, "error.type": "quota"},
        }
    )
    _, failed = span_events_of(typed)
    assert (failed["error_code"], failed["error_message"]) == ("quota", "gave up")
    _, ok = span_events_of(Span(**{**_fields(base), "status_code": STATUS_OK}))
    assert ok["event_type"] == "drafts_generated"
    assert "error_code" not in ok


def _fields(s: Span) -> dict[str, Any]:
    return {name: getattr(s, name) for name in Span.__slots__}


def test_genai_attributes_become_metadata_of_the_ending_event() -> None:
    _, ended = span_events_of(
        span(
            **{
                "gen_ai.request.model": "asked",
                "gen_ai.response.model": "answered",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 3,
                "llm.cost.total": 0.5,
                "voicemon.metadata.confidence_score": 0.9,
            }
        )
    )
    assert ended["metadata"] == {
        "confidence_score": 0.9,
        "ai_model": "answered",
        "input_tokens": 10,
        "output_tokens": 3,
        "ai_cost_usd": 0.5,
    }
    _, preferred = span_events_of(span(**{"gen_ai.usage.cost": 0.25, "llm.cost.total": 0.5}))
    assert preferred["metadata"] == {"ai_cost_usd": 0.25}


def test_an_event_type_span_is_that_one_event_at_its_end() -> None:
    (event,) = span_events_of(
        Span(
            TRACE,
            SPAN,
            "breaker",
            START,
            START + 5 * MS,
            attributes={"voicemon.event_type": "circuit_breaker_opened"},
        )
    )
    assert event == {
        "event_id": f"otlp-{TRACE}-{SPAN}-event",
        "event_type": "circuit_breaker_opened",
        "timestamp": START // MS + 5,
    }


def test_spans_that_are_not_voicemons_are_ignored_and_broken_ones_refused() -> None:
    http = Span(TRACE, SPAN, "GET /users", START, START, resource={"voicemon.organization_id": "org-a"})
    no_artifact = Span(TRACE, SPAN, "transcription", START, START)
    no_stage = Span(TRACE, SPAN, "work", START, START, attributes={"voicemon.artifact_id": "a"})
    backwards = span()
    backwards = Span(**{**_fields(backwards), "end_ns": START - 1})
    bad_id = Span(**{**_fields(span()), "trace_id": "0" * 32})
    mapped = map_spans([http, no_artifact, no_stage, backwards, bad_id, span()])
    assert mapped.ignored == 1
    assert mapped.refused == {
        1: "voicemon.artifact_id is required",
        2: "names no stage: set voicemon.stage (or name the span after a stage) or voicemon.event_type",
        3: "ends before it starts",
        4: "has no valid trace id (16 bytes, as 32 hex digits in JSON)",
    }
    assert mapped.span_of_item == [5, 5]


def test_the_resource_fills_in_what_the_span_does_not_say() -> None:
    own = {"voicemon.artifact_id": "a", "voicemon.organization_id": "mine"}
    resource = {"voicemon.organization_id": "proc", "user.id": "c"}
    s = Span(TRACE, SPAN, "transcription", START, START, attributes=own, resource=resource)
    started, _ = span_events_of(s)
    assert (started["organization_id"], started["coach_user_id"]) == ("mine", "c")


@given(
    st.binary(min_size=16, max_size=16).filter(any),
    st.binary(min_size=8, max_size=8).filter(any),
    st.integers(min_value=0, max_value=10**18),
    st.integers(min_value=0, max_value=86_400 * 10**9),
    st.sampled_from([STATUS_UNSET, STATUS_OK, STATUS_ERROR]),
)
def test_any_stage_span_maps_to_two_timed_events_with_ids_of_its_own(
    trace_id: bytes, span_id: bytes, start: int, length: int, status: int
) -> None:
    s = Span(trace_id.hex(), span_id.hex(), "transcription", start, start + length, status,
             attributes={"voicemon.artifact_id": "a"})  # fmt: skip
    started, ended = span_events_of(s)
    assert started["timestamp"] <= ended["timestamp"]
    assert ended["duration_ms"] == length / MS
    assert started["event_id"] != ended["event_id"]
    assert span_events(s) == [started, ended], "the same span maps to the same events"
    assert trace_id.hex() in ended["event_id"]
    assert span_id.hex() in ended["event_id"]


def test_an_event_type_that_ends_the_stage_ends_the_stage_span() -> None:
    s = span("entity_resolution", **{"voicemon.event_type": "entity_needs_disambiguation"})
    started, ended = span_events_of(s)
    assert (started["event_type"], ended["event_type"]) == (
        "entity_resolution_started",
        "entity_needs_disambiguation",
    )
    assert ended["duration_ms"] == 2500.25
    (other,) = span_events_of(span("entity_resolution", **{"voicemon.event_type": "draft_confirmed"}))
    assert other["event_type"] == "draft_confirmed"
