"""The pipeline's vocabulary: stages, statuses, event types and how they relate (SPEC 2, 3.2, 4)."""

from __future__ import annotations

from enum import StrEnum

# An artifact is named by its organization and its id (decision 0012): two organizations that pick the
# same id have two artifacts, and an event joins only the artifact of its own organization. The owner of
# an artifact of no organization is "" (never a valid organization id).
ArtifactKey = tuple[str, str]
NO_OWNER = ""


def artifact_key(organization_id: str | None, artifact_id: str) -> ArtifactKey:
    """``(owner, artifact_id)``: the owner is the organization, or ``""`` for none."""
    return (organization_id or NO_OWNER, artifact_id)


def owner_organization(owner: str) -> str | None:
    return owner or None


class Stage(StrEnum):
    INGESTION = "ingestion"
    TRANSCRIPTION = "transcription"
    CLAIMS_EXTRACTION = "claims_extraction"
    ENTITY_RESOLUTION = "entity_resolution"
    DRAFT_GENERATION = "draft_generation"
    CONFIRMATION = "confirmation"


# The stages that have latency and failure figures, in pipeline order.
MEASURED_STAGES: tuple[Stage, ...] = (
    Stage.TRANSCRIPTION,
    Stage.CLAIMS_EXTRACTION,
    Stage.ENTITY_RESOLUTION,
    Stage.DRAFT_GENERATION,
)


class Status(StrEnum):
    RECEIVED = "received"
    TRANSCRIBING = "transcribing"
    TRANSCRIBED = "transcribed"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE_STATUSES: frozenset[Status] = frozenset(
    {Status.RECEIVED, Status.TRANSCRIBING, Status.TRANSCRIBED, Status.PROCESSING}
)


class EventType(StrEnum):
    ARTIFACT_RECEIVED = "artifact_received"
    ARTIFACT_STATUS_CHANGED = "artifact_status_changed"
    ARTIFACT_COMPLETED = "artifact_completed"
    ARTIFACT_FAILED = "artifact_failed"
    TRANSCRIPTION_STARTED = "transcription_started"
    TRANSCRIPTION_COMPLETED = "transcription_completed"
    TRANSCRIPTION_FAILED = "transcription_failed"
    CLAIMS_EXTRACTION_STARTED = "claims_extraction_started"
    CLAIMS_EXTRACTED = "claims_extracted"
    CLAIMS_EXTRACTION_FAILED = "claims_extraction_failed"
    ENTITY_RESOLUTION_STARTED = "entity_resolution_started"
    ENTITY_RESOLUTION_COMPLETED = "entity_resolution_completed"
    ENTITY_RESOLUTION_FAILED = "entity_resolution_failed"
    ENTITY_NEEDS_DISAMBIGUATION = "entity_needs_disambiguation"
    DRAFT_GENERATION_STARTED = "draft_generation_started"
    DRAFTS_GENERATED = "drafts_generated"
    DRAFT_GENERATION_FAILED = "draft_generation_failed"
    DRAFT_CONFIRMED = "draft_confirmed"
    DRAFT_REJECTED = "draft_rejected"
    CIRCUIT_BREAKER_OPENED = "circuit_breaker_opened"
    CIRCUIT_BREAKER_CLOSED = "circuit_breaker_closed"
    RETRY_INITIATED = "retry_initiated"
    RETRY_SUCCEEDED = "retry_succeeded"
    RETRY_FAILED = "retry_failed"
    BUDGET_THRESHOLD_REACHED = "budget_threshold_reached"
    BUDGET_EXCEEDED = "budget_exceeded"
    RATE_LIMIT_HIT = "rate_limit_hit"


E = EventType

# The stage each type belongs to; None means "no stage of its own" (a given stage is kept).
STAGE_OF_TYPE: dict[EventType, Stage | None] = {
    E.ARTIFACT_RECEIVED: Stage.INGESTION,
    E.ARTIFACT_STATUS_CHANGED: None,
    E.ARTIFACT_COMPLETED: None,
    E.ARTIFACT_FAILED: None,
    E.TRANSCRIPTION_STARTED: Stage.TRANSCRIPTION,
    E.TRANSCRIPTION_COMPLETED: Stage.TRANSCRIPTION,
    E.TRANSCRIPTION_FAILED: Stage.TRANSCRIPTION,
    E.CLAIMS_EXTRACTION_STARTED: Stage.CLAIMS_EXTRACTION,
    E.CLAIMS_EXTRACTED: Stage.CLAIMS_EXTRACTION,
    E.CLAIMS_EXTRACTION_FAILED: Stage.CLAIMS_EXTRACTION,
    E.ENTITY_RESOLUTION_STARTED: Stage.ENTITY_RESOLUTION,
    E.ENTITY_RESOLUTION_COMPLETED: Stage.ENTITY_RESOLUTION,
    E.ENTITY_RESOLUTION_FAILED: Stage.ENTITY_RESOLUTION,
    E.ENTITY_NEEDS_DISAMBIGUATION: Stage.ENTITY_RESOLUTION,
    E.DRAFT_GENERATION_STARTED: Stage.DRAFT_GENERATION,
    E.DRAFTS_GENERATED: Stage.DRAFT_GENERATION,
    E.DRAFT_GENERATION_FAILED: Stage.DRAFT_GENERATION,
    E.DRAFT_CONFIRMED: Stage.CONFIRMATION,
    E.DRAFT_REJECTED: Stage.CONFIRMATION,
    E.CIRCUIT_BREAKER_OPENED: None,
    E.CIRCUIT_BREAKER_CLOSED: None,
    E.RETRY_INITIATED: None,
    E.RETRY_SUCCEEDED: None,
    E.RETRY_FAILED: None,
    E.BUDGET_THRESHOLD_REACHED: None,
    E.BUDGET_EXCEEDED: None,
    E.RATE_LIMIT_HIT: None,
}

# Types that describe the platform rather than one artifact: artifact_id is optional for them.
SYSTEM_TYPES: frozenset[EventType] = frozenset(
    {
        E.CIRCUIT_BREAKER_OPENED,
        E.CIRCUIT_BREAKER_CLOSED,
        E.BUDGET_THRESHOLD_REACHED,
        E.BUDGET_EXCEEDED,
        E.RATE_LIMIT_HIT,
    }
)

# voicemon's own record of a staff action (SPEC 9): written by the retry use cases, refused at ingest for
# every key, so that no pipeline can reset an artifact or fake a retry's outcome.
RESERVED_TYPES: frozenset[EventType] = frozenset({E.RETRY_INITIATED, E.RETRY_SUCCEEDED, E.RETRY_FAILED})

STARTED_TYPES: dict[EventType, Stage] = {
    E.TRANSCRIPTION_STARTED: Stage.TRANSCRIPTION,
    E.CLAIMS_EXTRACTION_STARTED: Stage.CLAIMS_EXTRACTION,
    E.ENTITY_RESOLUTION_STARTED: Stage.ENTITY_RESOLUTION,
    E.DRAFT_GENERATION_STARTED: Stage.DRAFT_GENERATION,
}

STAGE_COMPLETION_TYPES: frozenset[EventType] = frozenset(
    {
        E.TRANSCRIPTION_COMPLETED,
        E.CLAIMS_EXTRACTED,
        E.ENTITY_RESOLUTION_COMPLETED,
        E.ENTITY_NEEDS_DISAMBIGUATION,
        E.DRAFTS_GENERATED,
    }
)

STAGE_FAILURE_TYPES: frozenset[EventType] = frozenset(
    {
        E.TRANSCRIPTION_FAILED,
        E.CLAIMS_EXTRACTION_FAILED,
        E.ENTITY_RESOLUTION_FAILED,
        E.DRAFT_GENERATION_FAILED,
    }
)

FAILURE_TYPES: frozenset[EventType] = STAGE_FAILURE_TYPES | {E.ARTIFACT_FAILED}

# Types whose duration is worked out (SPEC 3.4): stage completions and stage failures.
TIMED_TYPES: frozenset[EventType] = STAGE_COMPLETION_TYPES | STAGE_FAILURE_TYPES


def status_set_by(event_type: EventType, new_status: Status | None) -> Status | None:
    """The status an event of this type moves its artifact to, or None if it leaves it alone (SPEC 4)."""
    if event_type is E.ARTIFACT_STATUS_CHANGED:
        return new_status
    if event_type is E.ARTIFACT_RECEIVED:
        return Status.RECEIVED
    if event_type is E.TRANSCRIPTION_STARTED:
        return Status.TRANSCRIBING
    if event_type is E.TRANSCRIPTION_COMPLETED:
        return Status.TRANSCRIBED
    if event_type is E.ARTIFACT_COMPLETED:
        return Status.COMPLETED
    if event_type in FAILURE_TYPES:
        return Status.FAILED
    if STAGE_OF_TYPE[event_type] in (
        Stage.CLAIMS_EXTRACTION,
        Stage.ENTITY_RESOLUTION,
        Stage.DRAFT_GENERATION,
    ):
        return Status.PROCESSING
    return None
