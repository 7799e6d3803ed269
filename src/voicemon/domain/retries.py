"""Retry rules (SPEC 9), without I/O: what a retry resets, when it is refused, how it ends, and backoff.

A retry's life: ``pending`` (committed, waiting for the pipeline to be told) → ``dispatched`` (the
pipeline acknowledged the command) → ``succeeded`` or ``failed``. It ends ``succeeded`` at the
artifact's next ``artifact_completed``, ``failed`` at its next failure event, or ``failed`` when the
command could not be delivered at all.

What may be retried: a failed artifact, or a stuck one (:func:`retry_origin`), from a stage no later
than the one it failed in or is stuck in, or in full (:func:`check_start`): the stages a later start
would skip never produced the output it needs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from voicemon.domain.events import Event
from voicemon.domain.model import FAILURE_TYPES, ArtifactKey, EventType, Stage, Status, artifact_key
from voicemon.domain.timeutil import HOUR_MS
from voicemon.errors import ConflictError

MAX_RETRIES_PER_HOUR = 10
RATE_WINDOW_MS = HOUR_MS
MAX_REASON_CHARS = 2000


class RetryStage(StrEnum):
    TRANSCRIPTION = "transcription"
    CLAIMS_EXTRACTION = "claims_extraction"
    ENTITY_RESOLUTION = "entity_resolution"
    DRAFT_GENERATION = "draft_generation"
    FULL = "full"


class RetryStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


IN_FLIGHT: frozenset[RetryStatus] = frozenset({RetryStatus.PENDING, RetryStatus.DISPATCHED})


class FromStatus(StrEnum):
    """What a retry started from: a failed artifact, or a stuck one (active, and silent too long)."""

    FAILED = "failed"
    STUCK = "stuck"


# The status an artifact is reset to when a retry of that stage starts.
RESET_STATUS: dict[RetryStage, Status] = {
    RetryStage.TRANSCRIPTION: Status.TRANSCRIBING,
    RetryStage.CLAIMS_EXTRACTION: Status.TRANSCRIBED,
    RetryStage.ENTITY_RESOLUTION: Status.PROCESSING,
    RetryStage.DRAFT_GENERATION: Status.PROCESSING,
    RetryStage.FULL: Status.RECEIVED,
}

RESET_STAGE: dict[RetryStage, Stage] = {
    RetryStage.TRANSCRIPTION: Stage.TRANSCRIPTION,
    RetryStage.CLAIMS_EXTRACTION: Stage.CLAIMS_EXTRACTION,
    RetryStage.ENTITY_RESOLUTION: Stage.ENTITY_RESOLUTION,
    RetryStage.DRAFT_GENERATION: Stage.DRAFT_GENERATION,
    RetryStage.FULL: Stage.INGESTION,
}

# The stages in the order an artifact goes through them; a retry starts at its RESET_STAGE.
PIPELINE_ORDER: tuple[Stage, ...] = (
    Stage.INGESTION,
    Stage.TRANSCRIPTION,
    Stage.CLAIMS_EXTRACTION,
    Stage.ENTITY_RESOLUTION,
    Stage.DRAFT_GENERATION,
    Stage.CONFIRMATION,
)
_POSITION: dict[Stage, int] = {stage: n for n, stage in enumerate(PIPELINE_ORDER)}


def retry_origin(status: Status, stuck: bool) -> FromStatus:
    """What a retry of an artifact in ``status`` (stuck or not) starts from; raises ConflictError
    ``not_failed`` (409) for an artifact that is neither failed nor stuck."""
    if status is Status.FAILED:
        return FromStatus.FAILED
    if stuck:
        return FromStatus.STUCK
    raise ConflictError(f"artifact is neither failed nor stuck (it is {status.value})", code="not_failed")


def allowed_stages(reached: Stage | None) -> tuple[RetryStage, ...]:
    """The retries that may start on an artifact that got as far as ``reached`` (the stage it failed in,
    or is stuck in): ``full``, and each stage retry that starts at ``reached`` or before it. Only
    ``full`` when the stage is unknown (None).

    >>> [s.value for s in allowed_stages(Stage.CLAIMS_EXTRACTION)]
    ['transcription', 'claims_extraction', 'full']
    """
    if reached is None:
        return (RetryStage.FULL,)
    last = _POSITION[reached]
    return tuple(s for s in RetryStage if s is RetryStage.FULL or _POSITION[RESET_STAGE[s]] <= last)


def check_start(stage: RetryStage, origin: FromStatus, reached: Stage | None) -> None:
    """Refuse a retry that would start after the stage the artifact got to: ``reached`` is its failed
    stage when ``origin`` is failed, its current stage when stuck. Raises ConflictError
    ``stage_after_failure`` (409)."""
    allowed = allowed_stages(reached)
    if stage in allowed:
        return
    where = "failed in" if origin is FromStatus.FAILED else "is stuck in"
    if reached is None:
        raise ConflictError(
            f"the stage this artifact {where} is unknown, so only a full retry is accepted",
            code="stage_after_failure",
        )
    raise ConflictError(
        f"artifact {where} {reached.value}: a {stage.value} retry would start after it, and the stages"
        f" it skips never produced their output (accepted: {', '.join(s.value for s in allowed)})",
        code="stage_after_failure",
    )


@dataclass(frozen=True, slots=True)
class Retry:
    retry_id: str
    artifact_id: str
    organization_id: str | None
    stage: RetryStage
    attempt: int
    requested_by: str
    reason: str | None
    status: RetryStatus
    from_status: FromStatus
    created_ms: int
    dispatched_ms: int | None = None
    finished_ms: int | None = None
    error: str | None = None

    @property
    def key(self) -> ArtifactKey:
        return artifact_key(self.organization_id, self.artifact_id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A retry ended by an event: its new status, when, and the error of a failure."""

    retry_id: str
    status: RetryStatus
    finished_ms: int
    error: str | None
    event: Event


def system_event_id(retry_id: str, what: str) -> str:
    """Deterministic ids for the events a retry logs, so a redo never logs one twice."""
    return f"retry:{retry_id}:{what}"


def decide_outcomes(
    events: Iterable[Event], in_flight: Mapping[ArtifactKey, Retry], make_event: EventMaker
) -> list[Outcome]:
    """The retries that newly stored events end: the first completion or failure of the artifact at or
    after the retry's start decides it."""
    decided: dict[str, Outcome] = {}
    for event in sorted(events, key=lambda e: e.timestamp_ms):
        if event.artifact_id is None:
            continue
        retry = in_flight.get(artifact_key(event.organization_id, event.artifact_id))
        if retry is None or retry.retry_id in decided or event.timestamp_ms < retry.created_ms:
            continue
        if event.event_type is EventType.ARTIFACT_COMPLETED:
            decided[retry.retry_id] = Outcome(
                retry.retry_id,
                RetryStatus.SUCCEEDED,
                event.timestamp_ms,
                None,
                make_event(retry, EventType.RETRY_SUCCEEDED, event.timestamp_ms, None),
            )
        elif event.event_type in FAILURE_TYPES:
            error = event.error_message or event.error_code or event.event_type.value
            decided[retry.retry_id] = Outcome(
                retry.retry_id,
                RetryStatus.FAILED,
                event.timestamp_ms,
                error,
                make_event(retry, EventType.RETRY_FAILED, event.timestamp_ms, error),
            )
    return list(decided.values())


class EventMaker:
    """Builds the system events a retry logs, in the retry's organization; given the voice note of each
    artifact by the caller."""

    def __init__(self, voice_notes: Mapping[ArtifactKey, str | None], received_ms: int) -> None:
        self._voice_notes = voice_notes
        self._received_ms = received_ms

    def __call__(self, retry: Retry, event_type: EventType, ts_ms: int, error: str | None) -> Event:
        org, voice_note = retry.organization_id, self._voice_notes.get(retry.key)
        what = {
            EventType.RETRY_INITIATED: "initiated",
            EventType.RETRY_SUCCEEDED: "succeeded",
            EventType.RETRY_FAILED: "failed",
        }[event_type]
        metadata = {
            "retry_attempt": retry.attempt,
            "retry_stage": retry.stage.value,
            "requested_by": retry.requested_by,
        }
        return Event(
            event_id=system_event_id(retry.retry_id, what),
            event_type=event_type,
            artifact_id=retry.artifact_id,
            organization_id=org,
            voice_note_id=voice_note,
            coach_user_id=None,
            pipeline_stage=None,
            timestamp_ms=ts_ms,
            received_ms=self._received_ms,
            stage_started_at_ms=None,
            stage_completed_at_ms=None,
            duration_ms=None,
            previous_status=None,
            new_status=None,
            error_message=error[:2000] if error else None,
            error_code="retry_failed" if error else None,
            metadata=metadata,
            cost_nusd=0,
            confidence=None,
            claim_count=None,
            entity_count=None,
            draft_count=None,
        )


def backoff_ms(attempt: int, base_ms: int, cap_ms: int, rng: random.Random) -> int:
    """Exponential backoff with full jitter: a uniform wait in [base/2, min(cap, base·2^attempt)]."""
    ceiling = min(cap_ms, base_ms * (2 ** max(0, attempt - 1)))
    return rng.randint(max(1, ceiling // 2), max(1, ceiling))
