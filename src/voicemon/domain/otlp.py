"""OpenTelemetry spans as voicemon events (SPEC 18): a pure mapping, so that traces from any language
take the one path every event takes (validation, organization scope, counters, artifact state,
snapshots, alerts).

A :class:`Span` is what the wire formats decode to (protobuf and OTLP/JSON alike, in ``api/otlp_wire``):
ids as lowercase hex, times in Unix nanoseconds, attributes as plain values with the resource's beneath
the span's own. One span is one stage attempt:

- with ``voicemon.stage`` (or a span name that names a stage, such as ``transcription`` or
  ``claims-extraction``), it becomes that stage's ``*_started`` event at its start and, at its end, its
  completion event (status OK or UNSET) or its failure event (status ERROR), with ``duration_ms`` =
  end - start;
- with ``voicemon.event_type``, it becomes that one event, at its end; on a stage span, an event type
  that ends that stage (``entity_needs_disambiguation``) is the span's ending event instead.

A span with no ``voicemon.*`` attribute of its own and no stage name (an HTTP call, a query: the rest of
an instrumented process) is not voicemon's. It is ignored, and not counted as rejected, so that the
rejected count means spans that meant to report and could not.

``voicemon.artifact_id`` is required for a stage span; ``voicemon.organization_id``,
``voicemon.voice_note_id`` and ``voicemon.coach_user_id`` (``session.id`` and ``user.id`` as
fallbacks) are carried over. GenAI attributes become metadata of the ending event: the model
(``gen_ai.response.model``, else ``gen_ai.request.model``), ``input_tokens`` and ``output_tokens``,
and ``ai_cost_usd`` (``gen_ai.usage.cost`` or ``llm.cost.total``). So do attributes named
``voicemon.metadata.<key>`` (``voicemon.metadata.claim_count``…). A failure's ``error_code`` is
``error.type`` or the type of its ``exception`` event; its ``error_message`` the status message, else
the exception's message.

Event ids derive from the trace id, the span id and the event's role (``started``, ``ended``, ``event``),
so that a re-sent span, which OTLP exporters do on any doubt, is a duplicate and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicemon.domain.model import STAGE_FAILURE_TYPES, STAGE_OF_TYPE, TIMED_TYPES, EventType, Stage

E = EventType
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
NS_PER_MS = 1_000_000

# Per measured stage: the events that start, complete and fail one attempt.
STAGE_EVENTS: dict[Stage, tuple[EventType, EventType, EventType]] = {
    Stage.TRANSCRIPTION: (E.TRANSCRIPTION_STARTED, E.TRANSCRIPTION_COMPLETED, E.TRANSCRIPTION_FAILED),
    Stage.CLAIMS_EXTRACTION: (E.CLAIMS_EXTRACTION_STARTED, E.CLAIMS_EXTRACTED, E.CLAIMS_EXTRACTION_FAILED),
    Stage.ENTITY_RESOLUTION: (
        E.ENTITY_RESOLUTION_STARTED,
        E.ENTITY_RESOLUTION_COMPLETED,
        E.ENTITY_RESOLUTION_FAILED,
    ),
    Stage.DRAFT_GENERATION: (E.DRAFT_GENERATION_STARTED, E.DRAFTS_GENERATED, E.DRAFT_GENERATION_FAILED),
}
_STAGE_NAMES = {s.value: s for s in STAGE_EVENTS}
_TYPES = frozenset(t.value for t in EventType)
_SEPARATORS = re.compile(r"[\s.\-/]+")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
MAX_CODE_CHARS = 128
METADATA_PREFIX = "voicemon.metadata."


@dataclass(frozen=True, slots=True)
class Span:
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # The attributes of the span's resource (the process); the span's own win over them.
    resource: Mapping[str, Any] = field(default_factory=dict)
    # The attributes of each span event named "exception", in order.
    exceptions: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class Mapped:
    """The events of a batch of spans, each with the index of its span; the spans refused, with why; and
    how many spans were not voicemon's at all (see :func:`is_ours`)."""

    items: list[dict[str, Any]]
    span_of_item: list[int]
    refused: dict[int, str]
    ignored: int


def is_ours(span: Span) -> bool:
    """Whether a span reports to voicemon: it has a ``voicemon.*`` attribute of its own, or its name
    names a stage. The other spans of an instrumented process (HTTP calls, queries) are none of ours:
    they are ignored, neither stored nor counted as rejected, so that the rejected count means spans
    that meant to report and could not."""
    return any(key.startswith("voicemon.") for key in span.attributes) or _stage(span) is not None


def map_spans(spans: Sequence[Span]) -> Mapped:
    items: list[dict[str, Any]] = []
    owners: list[int] = []
    refused: dict[int, str] = {}
    ignored = 0
    for index, span in enumerate(spans):
        if not is_ours(span):
            ignored += 1
            continue
        events = span_events(span)
        if isinstance(events, str):
            refused[index] = events
            continue
        items += events
        owners += [index] * len(events)
    return Mapped(items, owners, refused, ignored)


def span_events(span: Span) -> list[dict[str, Any]] | str:
    """The events of one span (as JSON event objects for the ingest validation), or why it has none."""
    a = {**span.resource, **span.attributes}
    if not (_TRACE_ID.fullmatch(span.trace_id) and span.trace_id.strip("0")):
        return "has no valid trace id (16 bytes, as 32 hex digits in JSON)"
    if not (_SPAN_ID.fullmatch(span.span_id) and span.span_id.strip("0")):
        return "has no valid span id (8 bytes, as 16 hex digits in JSON)"
    if span.end_ns < span.start_ns:
        return "ends before it starts"
    event_type = _text(a.get("voicemon.event_type"))
    stage = _stage(span)
    if event_type is None and stage is None:
        return "names no stage: set voicemon.stage (or name the span after a stage) or voicemon.event_type"
    common: dict[str, Any] = {}
    for name, keys in (
        ("artifact_id", ("voicemon.artifact_id",)),
        ("organization_id", ("voicemon.organization_id",)),
        ("voice_note_id", ("voicemon.voice_note_id",)),
        ("coach_user_id", ("voicemon.coach_user_id", "session.id", "user.id")),
    ):
        found = next((v for k in keys if (v := _text(a.get(k))) is not None), None)
        if found is not None:
            common[name] = found
    if "artifact_id" not in common and event_type is None:
        return "voicemon.artifact_id is required"
    start_ms, end_ms = span.start_ns // NS_PER_MS, span.end_ns // NS_PER_MS
    prefix = f"otlp-{span.trace_id}-{span.span_id}"
    metadata = _metadata(a)
    ending = _ending(stage, event_type)
    if event_type is not None and ending is None:
        event: dict[str, Any] = {
            "event_id": f"{prefix}-event",
            "event_type": event_type,
            "timestamp": end_ms,
            **common,
        }
        if stage is not None:
            event["pipeline_stage"] = stage.value
        for key in ("previous_status", "new_status"):
            if (value := _text(a.get(f"voicemon.{key}"))) is not None:
                event[key] = value
        if span.status_code == STATUS_ERROR or event_type.endswith("_failed"):
            event.update(_error(span))
        if metadata:
            event["metadata"] = metadata
        return [event]
    assert stage is not None
    started, completed, failed = STAGE_EVENTS[stage]
    if ending is None:
        ending = failed if span.status_code == STATUS_ERROR else completed
    ended: dict[str, Any] = {
        "event_id": f"{prefix}-ended",
        "event_type": ending.value,
        "timestamp": end_ms,
        "pipeline_stage": stage.value,
        "stage_started_at": start_ms,
        "stage_completed_at": end_ms,
        "duration_ms": (span.end_ns - span.start_ns) / NS_PER_MS,
        **common,
    }
    if span.status_code == STATUS_ERROR or ending in STAGE_FAILURE_TYPES:
        ended.update(_error(span))
    if metadata:
        ended["metadata"] = metadata
    first = {
        "event_id": f"{prefix}-started",
        "event_type": started.value,
        "timestamp": start_ms,
        "pipeline_stage": stage.value,
        **common,
    }
    return [first, ended]


def _ending(stage: Stage | None, event_type: str | None) -> EventType | None:
    """The event a stage span ends with when ``voicemon.event_type`` names one of that stage's endings
    (``entity_needs_disambiguation`` ends an entity resolution); None otherwise."""
    if stage is None or event_type is None or event_type not in _TYPES:
        return None
    named = EventType(event_type)
    return named if named in TIMED_TYPES and STAGE_OF_TYPE[named] is stage else None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _stage(span: Span) -> Stage | None:
    named = _text(span.attributes.get("voicemon.stage")) or _text(span.resource.get("voicemon.stage"))
    if named is None:
        named = _SEPARATORS.sub("_", span.name.strip().lower())
    return _STAGE_NAMES.get(named)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    return value if isinstance(value, int | float) else None


def _metadata(a: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        key.removeprefix(METADATA_PREFIX): value
        for key, value in a.items()
        if key.startswith(METADATA_PREFIX)
    }
    model = _text(a.get("gen_ai.response.model")) or _text(a.get("gen_ai.request.model"))
    if model is not None:
        out["ai_model"] = model
    for key, name in (
        ("gen_ai.usage.input_tokens", "input_tokens"),
        ("gen_ai.usage.output_tokens", "output_tokens"),
    ):
        if (tokens := _number(a.get(key))) is not None:
            out[name] = tokens
    cost = _number(a.get("gen_ai.usage.cost"))
    if cost is None:
        cost = _number(a.get("llm.cost.total"))
    if cost is not None:
        out["ai_cost_usd"] = cost
    return out


def _error(span: Span) -> dict[str, str]:
    exception = span.exceptions[0] if span.exceptions else {}
    code = _text(span.attributes.get("error.type")) or _text(exception.get("exception.type"))
    message = span.status_message or _text(exception.get("exception.message"))
    out = {}
    if code is not None:
        out["error_code"] = code[:MAX_CODE_CHARS]
    if message:
        out["error_message"] = message
    return out
