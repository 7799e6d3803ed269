"""Request and reply models: they make the OpenAPI document tell the truth about every endpoint.

Request models are strict: no extra fields, and no coercion between JSON types (``false`` is not ``0``,
``"5"`` is not ``5``), except that a JSON integer is a valid float. Every request string passes
:func:`~voicemon.domain.text.check_text`, the rule the event validator applies too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, create_model

from voicemon.domain.events import MAX_DURATION_MS, MAX_ERROR_MESSAGE_CHARS, MAX_ID_CHARS
from voicemon.domain.model import EventType, Stage, Status
from voicemon.domain.snapshot_fields import (
    FIELDS,
    ORG_BREAKDOWN,
    STAGE_BREAKDOWN,
    Count,
    Derived,
    Entry,
    Sketched,
    StageGroup,
)
from voicemon.domain.snapshot_layout import GROUPS, REPLY_ENTRIES
from voicemon.domain.text import check_text
from voicemon.errors import ValidationError


def _refuse_bad_characters(value: object, info: ValidationInfo) -> object:
    """Runs before pydantic's own string check, which refuses lone surrogates with a message of its own.

    It raises the domain's ValidationError rather than a pydantic error: pydantic lets it through
    unchanged, so the reply is the one every other entry point gives (422 ``invalid_character``, naming
    the field) instead of the generic ``invalid_request``."""
    if isinstance(value, str):
        problem = check_text(value)
        if problem is not None:
            raise ValidationError(problem.message, code=problem.code, field=info.field_name)
    return value


def _time_shape(value: object, info: ValidationInfo) -> object:
    """A time is a string or an integer, never a boolean or a float; refused with the code the event
    validator gives (``invalid_time``). The string itself is parsed by :func:`parse_time`."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(f"must be {TIME_DESCRIPTION}", code="invalid_time", field=info.field_name)
    return _refuse_bad_characters(value, info)


TIME_DESCRIPTION = "RFC 3339 with an offset (2026-11-28T13:05:00Z) or integer epoch milliseconds"
Text = Annotated[str, BeforeValidator(_refuse_bad_characters)]
TimeIn = Annotated[str | int, BeforeValidator(_time_shape)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EventIn(Strict):
    """One event as the pipeline sends it (SPEC 3.1). Validated item by item; see ``rejected``."""

    event_id: Text | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    # JSON has no enums: a strict enum would take only an enum member, never its JSON string.
    event_type: EventType = Field(strict=False)
    artifact_id: Text | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    organization_id: Text | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    voice_note_id: Text | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    coach_user_id: Text | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    pipeline_stage: Stage | None = Field(None, strict=False)
    timestamp: TimeIn | None = Field(None, description=TIME_DESCRIPTION)
    stage_started_at: TimeIn | None = Field(None, description=TIME_DESCRIPTION)
    stage_completed_at: TimeIn | None = Field(None, description=TIME_DESCRIPTION)
    duration_ms: float | None = Field(None, ge=0, lt=MAX_DURATION_MS)
    previous_status: Status | None = Field(None, strict=False)
    new_status: Status | None = Field(None, strict=False)
    error_message: Text | None = Field(None, min_length=1, max_length=MAX_ERROR_MESSAGE_CHARS)
    error_code: Text | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    metadata: dict[str, Any] | None = None


class EventBatchIn(Strict):
    events: list[EventIn] = Field(..., max_length=1000)


class FieldErrorOut(BaseModel):
    field: str
    code: str
    message: str


class RejectedOut(BaseModel):
    index: int
    event_id: str | None
    errors: list[FieldErrorOut]


class IngestReply(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedOut]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorReply(BaseModel):
    error: ErrorBody


class EventOut(BaseModel):
    event_id: str
    event_type: EventType
    artifact_id: str | None
    organization_id: str | None
    voice_note_id: str | None
    coach_user_id: str | None
    pipeline_stage: Stage | None
    timestamp: str
    received_at: str
    stage_started_at: str | None
    stage_completed_at: str | None
    duration_ms: float | None
    previous_status: Status | None
    new_status: Status | None
    error_message: str | None
    error_code: str | None
    metadata: dict[str, Any] | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class ArtifactOut(BaseModel):
    artifact_id: str
    organization_id: str | None
    voice_note_id: str | None
    coach_user_id: str | None
    source_channel: str | None
    status: Status
    stuck: bool
    current_stage: Stage | None
    failed_stage: Stage | None
    last_error_code: str | None
    last_error_message: str | None
    received_at: str | None
    completed_at: str | None
    last_event_at: str
    event_count: int
    retry_count: int
    total_ai_cost_usd: float


class ArtifactPage(BaseModel):
    items: list[ArtifactOut]
    next_cursor: str | None


class ArtifactDetailOut(ArtifactOut):
    timeline: list[EventOut]
    retries: list[RetryOut]


class RealtimeCounts(BaseModel):
    artifacts_received: int
    artifacts_completed: int
    artifacts_failed: int
    transcriptions_completed: int
    claims_extracted: int
    entities_resolved: int
    drafts_generated: int
    failures: int
    ai_cost_usd: float


class RealtimeOut(BaseModel):
    window_start: str
    window_end: str
    organization_id: str | None = Field(None, description="absent for the platform-wide window")
    counts: RealtimeCounts
    failure_rate: float
    data_through: str = Field(description="the counters hold every event committed up to this time (now)")


class OrgIn(Strict):
    # The display-name rule (not blank, no control characters) is the use case's, for every entry point.
    name: Text = Field(..., min_length=1, max_length=200)


class OrgOut(BaseModel):
    organization_id: str
    name: str
    updated_at: str


class OrgList(BaseModel):
    items: list[OrgOut]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]


class LatencyOut(BaseModel):
    count: int
    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None


def _list_of(model: type[BaseModel]) -> Any:
    # list[model] of a model made at run time, which a type checker cannot see.
    return list.__class_getitem__(model)


def _group_model(group: StageGroup) -> type[BaseModel]:
    key: Any = Literal.__getitem__(tuple(stage.value for stage in group.stages))
    fields = {group.item_key: (key, ...), **_reply_fields(group.fields)}
    return create_model(f"{group.item_key.capitalize()}Out", **fields)


def _reply_fields(entries: Iterable[Entry]) -> dict[str, Any]:
    """The reply fields of declared snapshot entries, in order, as ``create_model`` takes them."""
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.reply is None:
            continue
        if isinstance(entry, Count):
            kind: Any = int
        elif isinstance(entry, Sketched):
            kind = LatencyOut
        elif isinstance(entry, Derived):
            kind = float | None if entry.nullable else float
        else:
            kind = _list_of(_GROUP_MODELS[entry.name])
        out[entry.reply] = (kind, ...)
    return out


_GROUP_MODELS = {name: _group_model(group) for name, group in GROUPS.items()}


class _SnapshotHead(BaseModel):
    period_type: Literal["hourly", "daily"]
    period_start: str
    period_end: str
    organization_id: str | None = Field(None, description="absent on platform-wide rows")
    computed_at: str


class _OrgHead(BaseModel):
    organization_id: str
    organization_name: str


class CoverageOut(BaseModel):
    """What a range answer covers (SPEC 7)."""

    period_start: str = Field(description="start of the first period merged (aligned)")
    period_end: str = Field(description="end of the last period merged (ahead of now while it runs)")
    periods_expected: int = Field(description="periods of the range that have begun")
    periods_aggregated: int = Field(description="of those, read from stored snapshots")
    periods_live: int = Field(description="of those, computed now from what they are built from")
    missing: list[str] = Field(description="complete periods with no figures (never aggregated), at most 50")
    stale: list[str] = Field(description="aggregated periods marked by late events since, at most 50")
    data_through: str | None = Field(description="end of the newest period merged, or now while it runs")
    live_from: str | None = Field(description="start of the first period computed live")


# The snapshot replies carry the declared fields (voicemon.domain.snapshot_fields), in their order.
SnapshotOut = create_model("SnapshotOut", __base__=_SnapshotHead, **_reply_fields(FIELDS))
HistoryRowOut = create_model(
    "HistoryRowOut",
    __base__=SnapshotOut,
    live=(bool | None, Field(None, description="true on a period computed live (not yet aggregated)")),
)
SnapshotList = create_model("SnapshotList", items=(_list_of(HistoryRowOut), ...), coverage=(CoverageOut, ...))
SummaryOut = create_model("SummaryOut", __base__=SnapshotOut, coverage=(CoverageOut, ...))
StagesOut = create_model(
    "StagesOut", **_reply_fields(REPLY_ENTRIES[n] for n in STAGE_BREAKDOWN), coverage=(CoverageOut, ...)
)
OrgMetricsOut = create_model(
    "OrgMetricsOut", __base__=_OrgHead, **_reply_fields(REPLY_ENTRIES[n] for n in ORG_BREAKDOWN)
)
OrgMetricsList = create_model(
    "OrgMetricsList", items=(_list_of(OrgMetricsOut), ...), coverage=(CoverageOut, ...)
)


class RunOut(BaseModel):
    run_id: str
    name: str
    trigger: Literal["schedule", "manual"]
    scheduled_for: str
    target: str | None
    status: Literal["pending", "running", "succeeded", "failed"]
    started_at: str | None
    finished_at: str | None
    summary: dict[str, Any] | None
    error: str | None


class JobOut(BaseModel):
    name: str
    schedule: str
    next_run_at: str
    last_run: RunOut | None


class JobList(BaseModel):
    items: list[JobOut]


class RunList(BaseModel):
    items: list[RunOut]


class RunIn(Strict):
    target: TimeIn | None = Field(None, description=TIME_DESCRIPTION + "; the period containing it is run")


class RetryIn(Strict):
    stage: Literal["transcription", "claims_extraction", "entity_resolution", "draft_generation", "full"]
    reason: Text = Field(min_length=1, max_length=2000, description="why; kept with the retry record")


class RetryOut(BaseModel):
    retry_id: str
    artifact_id: str
    organization_id: str | None
    stage: Literal["transcription", "claims_extraction", "entity_resolution", "draft_generation", "full"]
    attempt: int
    requested_by: str
    reason: str | None
    status: Literal["pending", "dispatched", "succeeded", "failed"]
    from_status: Literal["failed", "stuck"] = Field(
        description="what the retry started from: a failed artifact, or a stuck one (active, no event for"
        " longer than the stuck threshold)"
    )
    created_at: str
    dispatched_at: str | None
    finished_at: str | None
    error: str | None


class RetryList(BaseModel):
    items: list[RetryOut]


# --- alerts (SPEC 14) -----------------------------------------------------------------------------------

Severity = Literal["low", "medium", "high", "critical"]
AlertStateOut = Literal["firing", "acknowledged", "resolved"]


class AlertOut(BaseModel):
    alert_id: str
    rule: str
    severity: Severity
    organization_id: str | None = Field(None, description="absent on a platform-wide alert")
    organization_name: str | None = Field(None, description="absent on a platform-wide alert")
    stage: str | None = Field(description="the stage of a per-stage rule")
    state: AlertStateOut
    value: float = Field(description="the newest evaluation's figure, in the rule's unit")
    threshold: float = Field(description="the threshold of the severity reached")
    message: str
    started_at: str
    last_evaluated_at: str
    last_evaluation: Literal["breaching", "clear", "insufficient_data"]
    acknowledged_at: str | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_at: str | None


class AlertPageOut(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class TransitionOut(BaseModel):
    at: str
    kind: Literal["fired", "escalated", "acknowledged", "resolved"]
    severity: Severity
    value: float | None
    threshold: float | None
    actor: str | None = Field(description="who acknowledged")
    note: str | None


class DeliveryOut(BaseModel):
    channel: Literal["webhook", "slack", "alertmanager"]
    notification: str
    status: Literal["delivered", "undeliverable"]
    attempts: int
    at: str
    error: str | None


class AlertDetailOut(AlertOut):
    transitions: list[TransitionOut] = Field(description="oldest first")
    deliveries: list[DeliveryOut] = Field(description="oldest first, once each entry settled")


class AckIn(Strict):
    note: Text | None = Field(None, max_length=2000, description="why, or what is being done; kept")


class LevelIO(Strict):
    severity: Severity
    threshold: float = Field(description="a finite number, 0 or more; a value exactly at it does not breach")


class RuleOut(BaseModel):
    rule: str
    per_stage: bool
    enabled: bool
    levels: list[LevelIO] = Field(description="from the mildest severity to the most severe")
    min_volume: float
    for_evaluations: int
    clear_evaluations: int
    updated_at: str | None = Field(description="when it was last changed; null while it has its defaults")
    updated_by: str | None


class RuleList(BaseModel):
    items: list[RuleOut]


class RuleChangeIn(Strict):
    """Only the fields given change; the result is checked whole."""

    enabled: bool | None = None
    levels: list[LevelIO] | None = Field(None, min_length=1, max_length=4)
    min_volume: float | None = None
    for_evaluations: int | None = None
    clear_evaluations: int | None = None


ArtifactDetailOut.model_rebuild()
