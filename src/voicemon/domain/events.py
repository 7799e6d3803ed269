"""One event as voicemon keeps it, and the rules an incoming event must meet (SPEC 3).

:func:`validate_event` is pure: it takes the decoded JSON of one item and the facts of the request (time,
retention, the caller's organization scope) and returns either an :class:`Event` or the list of every rule
the item breaks, each naming its field.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from voicemon.domain.model import (
    RESERVED_TYPES,
    STAGE_OF_TYPE,
    SYSTEM_TYPES,
    TIMED_TYPES,
    EventType,
    Stage,
    Status,
)
from voicemon.domain.text import check_text
from voicemon.domain.timeutil import MINUTE_MS, TimeParseError, parse_time

MAX_ID_CHARS = 128
MAX_ERROR_MESSAGE_CHARS = 2000
MAX_METADATA_BYTES = 8 * 1024
MAX_DURATION_MS = 86_400_000
FUTURE_TOLERANCE_MS = 5 * MINUTE_MS
MAX_COUNT = 2**31 - 1
# Integers in metadata: what a signed 64-bit reader (PostgreSQL jsonb, Go, Java) holds exactly.
MIN_INT64 = -(2**63)
MAX_INT64 = 2**63 - 1
MAX_COST_USD = 1_000_000.0
NANO_USD_PER_USD = 1_000_000_000

INT_METADATA_KEYS = (
    "claim_count",
    "entity_count",
    "auto_resolved_count",
    "disambiguation_count",
    "draft_count",
    "transcript_word_count",
    "retry_attempt",
)
NON_NEGATIVE_METADATA_KEYS = ("transcript_duration_s", "ai_cost_usd")
STRING_METADATA_KEYS = ("ai_model", "source_channel", "prompt_version")
KNOWN_METADATA_KEYS = frozenset(
    {*INT_METADATA_KEYS, *NON_NEGATIVE_METADATA_KEYS, *STRING_METADATA_KEYS, "confidence_score"}
)

_E = TypeVar("_E", Stage, Status, EventType)

_ID_FIELDS = ("event_id", "artifact_id", "organization_id", "voice_note_id", "coach_user_id")
_TIME_FIELDS = ("timestamp", "stage_started_at", "stage_completed_at")
KNOWN_FIELDS = frozenset(
    {
        *_ID_FIELDS,
        *_TIME_FIELDS,
        "event_type",
        "pipeline_stage",
        "duration_ms",
        "previous_status",
        "new_status",
        "error_message",
        "error_code",
        "metadata",
    }
)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: ``field`` is a dotted path such as ``metadata.claim_count``."""

    field: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. Times are UTC epoch milliseconds; cost is in nano-USD so sums are exact."""

    event_id: str
    event_type: EventType
    artifact_id: str | None
    organization_id: str | None
    voice_note_id: str | None
    coach_user_id: str | None
    pipeline_stage: Stage | None
    timestamp_ms: int
    received_ms: int
    stage_started_at_ms: int | None
    stage_completed_at_ms: int | None
    duration_ms: float | None
    previous_status: Status | None
    new_status: Status | None
    error_message: str | None
    error_code: str | None
    metadata: Mapping[str, Any] | None
    cost_nusd: int
    confidence: float | None
    claim_count: int | None
    entity_count: int | None
    draft_count: int | None

    @property
    def source_channel(self) -> str | None:
        value = self.metadata.get("source_channel") if self.metadata else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """What the validator needs to know about the request an item came in."""

    now_ms: int
    event_retention_ms: int
    scope_organization_id: str | None
    new_event_id: Callable[[int], str]


def usd_to_nusd(usd: float) -> int:
    """Dollars to integer nano-dollars, rounded half to even."""
    return round(usd * NANO_USD_PER_USD)


def nusd_to_usd(nusd: int) -> float:
    return nusd / NANO_USD_PER_USD


class _Checker:
    """Collects every broken rule of one item instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, field: str, code: str, message: str) -> None:
        self.errors.append(FieldError(field, code, message))

    def string(self, field: str, value: object, max_chars: int) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(field, "invalid_type", "must be a string")
            return None
        if value == "":
            self.fail(field, "empty", "must not be empty")
            return None
        if len(value) > max_chars:
            self.fail(field, "too_long", f"must be at most {max_chars} characters")
            return None
        problem = check_text(value)
        if problem is not None:
            self.fail(field, problem.code, problem.message)
            return None
        return value

    def number(self, field: str, value: object, low: float, high: float | None) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, "invalid_type", "must be a number")
            return None
        if not math.isfinite(value):
            self.fail(field, "not_finite", "must be a finite number")
            return None
        if value < low or (high is not None and value >= high):
            bound = f"at least {low:g}" + (f" and below {high:g}" if high is not None else "")
            self.fail(field, "out_of_range", f"must be {bound}")
            return None
        return float(value)

    def integer(self, field: str, value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "invalid_type", "must be an integer")
            return None
        if not 0 <= value <= MAX_COUNT:
            self.fail(field, "out_of_range", f"must be between 0 and {MAX_COUNT}")
            return None
        return value

    def enum(self, field: str, value: object, kind: type[_E]) -> _E | None:
        if value is None:
            return None
        if isinstance(value, str):
            member = kind._value2member_map_.get(value)  # what kind(value) looks up, without the call
            if member is not None:
                return member  # type: ignore[return-value]
        allowed = ", ".join(m.value for m in kind)
        self.fail(field, "invalid_enum", f"must be one of: {allowed}")
        return None

    def time(self, field: str, value: object) -> int | None:
        if value is None:
            return None
        try:
            return parse_time(value)
        except TimeParseError as exc:
            self.fail(field, exc.code, str(exc))
            return None


def validate_event(raw: object, ctx: ValidationContext) -> Event | list[FieldError]:
    """Check one decoded item against SPEC 3; return the event or every error found."""
    if not isinstance(raw, dict):
        return [FieldError("", "invalid_type", "an event must be a JSON object")]
    c = _Checker()
    for name in raw:
        if name not in KNOWN_FIELDS:
            c.fail(str(name), "unknown_field", "is not an event field")

    event_id = c.string("event_id", raw.get("event_id"), MAX_ID_CHARS)
    artifact_id = c.string("artifact_id", raw.get("artifact_id"), MAX_ID_CHARS)
    organization_id = c.string("organization_id", raw.get("organization_id"), MAX_ID_CHARS)
    voice_note_id = c.string("voice_note_id", raw.get("voice_note_id"), MAX_ID_CHARS)
    coach_user_id = c.string("coach_user_id", raw.get("coach_user_id"), MAX_ID_CHARS)

    event_type = None
    if raw.get("event_type") is None:
        c.fail("event_type", "required", "is required")
    else:
        event_type = c.enum("event_type", raw.get("event_type"), EventType)
        if event_type in RESERVED_TYPES:
            c.fail(
                "event_type",
                "reserved_type",
                f"{event_type.value} is recorded by voicemon itself when staff retry an artifact;"
                " request a retry with POST /v1/artifacts/{artifact_id}/retries",
            )

    stage = c.enum("pipeline_stage", raw.get("pipeline_stage"), Stage)
    if event_type is not None:
        derived = STAGE_OF_TYPE[event_type]
        if derived is not None:
            if stage is not None and stage is not derived:
                c.fail(
                    "pipeline_stage", "stage_mismatch", f"{event_type.value} belongs to stage {derived.value}"
                )
            stage = derived
        if artifact_id is None and event_type not in SYSTEM_TYPES and "artifact_id" not in _failed(c):
            c.fail("artifact_id", "required", f"is required for {event_type.value}")

    timestamp = c.time("timestamp", raw.get("timestamp"))
    if timestamp is None and raw.get("timestamp") is None:
        timestamp = ctx.now_ms
    if timestamp is not None:
        if timestamp > ctx.now_ms + FUTURE_TOLERANCE_MS:
            c.fail("timestamp", "in_future", "is more than 5 minutes in the future")
        elif timestamp < ctx.now_ms - ctx.event_retention_ms:
            hours = ctx.event_retention_ms / 3_600_000
            c.fail("timestamp", "too_old", f"is older than the raw-event retention of {hours:g} h")
    started_at = c.time("stage_started_at", raw.get("stage_started_at"))
    completed_at = c.time("stage_completed_at", raw.get("stage_completed_at"))
    duration = c.number("duration_ms", raw.get("duration_ms"), 0, MAX_DURATION_MS)
    if started_at is not None and completed_at is not None and completed_at < started_at:
        c.fail("stage_completed_at", "before_start", "must not be before stage_started_at")

    previous_status = c.enum("previous_status", raw.get("previous_status"), Status)
    new_status = c.enum("new_status", raw.get("new_status"), Status)
    if event_type is EventType.ARTIFACT_STATUS_CHANGED and raw.get("new_status") is None:
        c.fail("new_status", "required", "is required for artifact_status_changed")
    error_message = c.string("error_message", raw.get("error_message"), MAX_ERROR_MESSAGE_CHARS)
    error_code = c.string("error_code", raw.get("error_code"), MAX_ID_CHARS)

    metadata, cost_usd, confidence, counts = _check_metadata(c, raw.get("metadata"))

    if ctx.scope_organization_id is not None:
        if organization_id is None and raw.get("organization_id") is None:
            organization_id = ctx.scope_organization_id
        elif organization_id is not None and organization_id != ctx.scope_organization_id:
            c.fail("organization_id", "forbidden_organization", "is outside this key's organization scope")

    if c.errors or event_type is None or timestamp is None:
        return c.errors

    if duration is None and event_type in TIMED_TYPES and started_at is not None and completed_at is not None:
        duration = float(completed_at - started_at)
        if duration >= MAX_DURATION_MS:
            duration = None
    return Event(
        event_id=event_id if event_id is not None else ctx.new_event_id(ctx.now_ms),
        event_type=event_type,
        artifact_id=artifact_id,
        organization_id=organization_id,
        voice_note_id=voice_note_id,
        coach_user_id=coach_user_id,
        pipeline_stage=stage,
        timestamp_ms=timestamp,
        received_ms=ctx.now_ms,
        stage_started_at_ms=started_at,
        stage_completed_at_ms=completed_at,
        duration_ms=duration,
        previous_status=previous_status,
        new_status=new_status,
        error_message=error_message,
        error_code=error_code,
        metadata=metadata,
        cost_nusd=usd_to_nusd(cost_usd) if cost_usd is not None else 0,
        confidence=confidence,
        claim_count=counts.get("claim_count"),
        entity_count=counts.get("entity_count"),
        draft_count=counts.get("draft_count"),
    )


def _failed(c: _Checker) -> set[str]:
    return {e.field for e in c.errors}


def _check_metadata(
    c: _Checker, value: object
) -> tuple[dict[str, Any] | None, float | None, float | None, dict[str, int]]:
    counts: dict[str, int] = {}
    if value is None:
        return None, None, None, counts
    if not isinstance(value, dict):
        c.fail("metadata", "invalid_type", "must be a JSON object")
        return None, None, None, counts
    kept = _Checker()
    for key, item in value.items():
        if key not in KNOWN_METADATA_KEYS:  # a known key is plain ASCII: nothing to check in it
            _check_key(kept, "metadata", key)
            _check_kept(kept, f"metadata.{key}", item)
    before = len(c.errors)
    size: int | None = None
    if not kept.errors:  # what failed there (a surrogate, a 65-bit integer) cannot be measured as JSON
        # If orjson cannot write it, a known key's check below may say why; if none does, it is not JSON.
        with contextlib.suppress(TypeError, orjson.JSONEncodeError):
            size = len(orjson.dumps(value))
        if size is not None and size > MAX_METADATA_BYTES:
            c.fail("metadata", "too_large", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
            return None, None, None, counts
    for key in INT_METADATA_KEYS:
        number = c.integer(f"metadata.{key}", value.get(key))
        if number is not None:
            counts[key] = number
    cost = c.number("metadata.ai_cost_usd", value.get("ai_cost_usd"), 0, MAX_COST_USD)
    c.number("metadata.transcript_duration_s", value.get("transcript_duration_s"), 0, None)
    confidence = c.number("metadata.confidence_score", value.get("confidence_score"), 0, None)
    if confidence is not None and confidence > 1:
        c.fail("metadata.confidence_score", "out_of_range", "must be between 0 and 1")
        confidence = None
    for key in STRING_METADATA_KEYS:
        c.string(f"metadata.{key}", value.get(key), MAX_ID_CHARS)
    if size is None and not kept.errors and len(c.errors) == before:
        c.fail("metadata", "invalid_type", "must be plain JSON")
    c.errors.extend(kept.errors)
    return value, cost, confidence, counts


def _check_key(c: _Checker, parent: str, key: object) -> None:
    problem = check_text(key) if isinstance(key, str) else None
    if problem is not None:
        c.fail(f"{parent}.{key}", problem.code, f"key {problem.message}")


def _check_kept(c: _Checker, path: str, value: object) -> None:
    """Unknown metadata is kept exactly as given, so it may hold only what every database and JSON reader
    keeps exactly: finite numbers, integers of signed 64 bits, strings that pass :func:`check_text`.

    Iterative (decoded JSON may nest deeper than Python's recursion limit); a path is spelled out only
    for an item that fails."""
    stack: list[tuple[str, object, object]] = [(path, None, value)]
    while stack:
        parent, key, item = stack.pop()
        problem: tuple[str, str] | None = None
        if isinstance(item, str):
            found = check_text(item)
            problem = (found.code, found.message) if found is not None else None
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not MIN_INT64 <= item <= MAX_INT64:
                problem = ("out_of_range", "must be an integer of signed 64 bits (-2**63 to 2**63 - 1)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                problem = ("not_finite", "must be a finite number")
        elif isinstance(item, dict | list):
            where = parent if key is None else f"{parent}.{key}"
            if isinstance(item, dict):
                for k in item:
                    _check_key(c, where, k)
                children: list[tuple[str, object, object]] = [(where, k, v) for k, v in item.items()]
            else:
                children = [(where, i, v) for i, v in enumerate(item)]
            stack.extend(reversed(children))
        if problem is not None:
            c.fail(parent if key is None else f"{parent}.{key}", *problem)


def dumps_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    return None if metadata is None else orjson.dumps(metadata).decode()
