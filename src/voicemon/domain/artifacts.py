"""An artifact's summary, folded from its events in any order (SPEC 4, 3.4).

:func:`fold` applies events in arrival order to each artifact's summary, through one state machine. The
status is the one implied by the status-changing event with the latest ``timestamp``; a tie goes to the
later arrival. The summary also remembers when each stage
last started, so a completion that arrives in a later request than its ``*_started`` still gets its
duration (the earlier system's latencies were always 0 because it could not do this).
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy
from dataclasses import dataclass, field, replace

from voicemon.domain.access import Principal, can_see_organization, visible_organization
from voicemon.domain.events import MAX_DURATION_MS, Event
from voicemon.domain.model import (
    ACTIVE_STATUSES,
    STARTED_TYPES,
    TIMED_TYPES,
    ArtifactKey,
    EventType,
    Stage,
    Status,
    artifact_key,
    status_set_by,
)
from voicemon.domain.retries import RESET_STAGE, RESET_STATUS, RetryStage
from voicemon.errors import ConflictError, NotFoundError


def event_key(event: Event) -> ArtifactKey | None:
    return artifact_key(event.organization_id, event.artifact_id) if event.artifact_id is not None else None


@dataclass(slots=True)
class ArtifactState:
    """One row of artifact summary. ``status_at_ms``, ``stage_at_ms`` and ``error_at_ms`` are the times of
    the events that set ``status``, ``current_stage`` and the last error.

    Mutable only so that :func:`fold` can update its private working copies in place (the hot path of
    ingestion); every public function returns new objects and leaves its inputs alone."""

    artifact_id: str
    organization_id: str | None = None
    voice_note_id: str | None = None
    coach_user_id: str | None = None
    source_channel: str | None = None
    status: Status = Status.RECEIVED
    status_at_ms: int | None = None
    current_stage: Stage | None = None
    stage_at_ms: int | None = None
    failed_stage: Stage | None = None
    last_error_code: str | None = None
    last_error_message: str | None = None
    error_at_ms: int | None = None
    received_at_ms: int | None = None
    completed_at_ms: int | None = None
    first_event_at_ms: int = 0
    last_event_at_ms: int = 0
    event_count: int = 0
    retry_count: int = 0
    total_cost_nusd: int = 0
    stage_started_ms: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> ArtifactKey:
        return artifact_key(self.organization_id, self.artifact_id)

    @property
    def listed_at_ms(self) -> int:
        """The time lists sort by: when it was received, or first seen if no receipt arrived yet."""
        return self.received_at_ms if self.received_at_ms is not None else self.first_event_at_ms

    def is_stuck(self, now_ms: int, stuck_after_ms: int) -> bool:
        return self.status in ACTIVE_STATUSES and self.last_event_at_ms < now_ms - stuck_after_ms


def choose_artifact(
    principal: Principal, artifact_id: str, organization_id: str | None, candidates: Sequence[ArtifactState]
) -> ArtifactState:
    """The one artifact a request names, among the stored artifacts with this id (of any organization).

    ``organization_id`` completes the name. Omitted, it is the caller's own organization for a scoped
    key; for an unscoped key it is the artifact of no organization if there is one, else the only
    artifact with this id. Raises 404 ``artifact_not_found`` when the caller sees none (another
    organization's artifact is not revealed to exist), 403 when a scoped key names another organization,
    and 409 ``ambiguous_artifact`` when several organizations use the id and none was named.
    """
    scope = visible_organization(principal, organization_id)
    seen = [
        c
        for c in candidates
        if c.artifact_id == artifact_id and can_see_organization(principal, c.organization_id)
    ]
    if scope is not None:
        seen = [c for c in seen if c.organization_id == scope]
    elif len(seen) > 1:
        unowned = [c for c in seen if c.organization_id is None]
        if unowned:
            return unowned[0]
        orgs = ", ".join(sorted(c.organization_id or "" for c in seen))
        raise ConflictError(
            f"artifact id {artifact_id!r} is used by several organizations ({orgs}); name one with"
            " organization_id",
            code="ambiguous_artifact",
        )
    if not seen:
        raise NotFoundError(f"no artifact {artifact_id!r}", code="artifact_not_found")
    return seen[0]


def new_artifact(event: Event) -> ArtifactState:
    assert event.artifact_id is not None
    return ArtifactState(
        artifact_id=event.artifact_id,
        organization_id=event.organization_id,
        first_event_at_ms=event.timestamp_ms,
        last_event_at_ms=event.timestamp_ms,
    )


def _apply_in_place(s: ArtifactState, event: Event) -> Event:
    """The state machine, mutating ``s`` (a private working copy)."""
    ts = event.timestamp_ms
    kind = event.event_type
    if event.duration_ms is None and kind in TIMED_TYPES and event.pipeline_stage is not None:
        started = s.stage_started_ms.get(event.pipeline_stage._value_)
        if started is not None and started <= ts < started + MAX_DURATION_MS:
            event = replace(event, duration_ms=float(ts - started))

    s.event_count += 1
    s.total_cost_nusd += event.cost_nusd
    s.first_event_at_ms = min(s.first_event_at_ms, ts)
    s.last_event_at_ms = max(s.last_event_at_ms, ts)
    if s.voice_note_id is None:
        s.voice_note_id = event.voice_note_id
    if s.coach_user_id is None:
        s.coach_user_id = event.coach_user_id
    if s.source_channel is None and event.metadata:
        s.source_channel = event.source_channel

    if kind is EventType.ARTIFACT_RECEIVED and (s.received_at_ms is None or ts < s.received_at_ms):
        s.received_at_ms = ts
    elif kind is EventType.ARTIFACT_COMPLETED and (s.completed_at_ms is None or ts > s.completed_at_ms):
        s.completed_at_ms = ts

    started_stage = STARTED_TYPES.get(kind)
    if started_stage is not None:
        known = s.stage_started_ms.get(started_stage._value_)
        if known is None or ts >= known:
            s.stage_started_ms = {**s.stage_started_ms, started_stage._value_: ts}

    current = s.status_at_ms is None or ts >= s.status_at_ms
    if kind is EventType.RETRY_INITIATED:
        _retry_reset(s, event)
    elif kind is EventType.RETRY_FAILED and s.status is not Status.FAILED and current:
        _set_status(s, event, Status.FAILED)
        s.failed_stage = _retry_stage_of(event)
    status = status_set_by(kind, event.new_status)
    if status is not None and current:
        _set_status(s, event, status)
    elif status is not None:
        # Too old to set the status, yet maybe newer than the events that gave the current stage or the
        # last error: in time order it would have set them (a later stageless artifact_failed or
        # artifact_completed keeps the stage), so the summary does not depend on the arrival order.
        if event.pipeline_stage is not None and _newer(ts, s.stage_at_ms):
            s.current_stage = event.pipeline_stage
            s.stage_at_ms = ts
            if s.status is Status.FAILED:
                s.failed_stage = event.pipeline_stage
        if status is Status.FAILED and _newer(ts, s.error_at_ms):
            _set_error(s, event)
    return event


def _newer(ts: int, than_ms: int | None) -> bool:
    return than_ms is None or ts >= than_ms


def _set_error(s: ArtifactState, event: Event) -> None:
    s.last_error_code = event.error_code
    s.last_error_message = event.error_message
    s.error_at_ms = event.timestamp_ms


def _retry_stage(event: Event) -> RetryStage | None:
    value = event.metadata.get("retry_stage") if event.metadata else None
    try:
        return RetryStage(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _retry_stage_of(event: Event) -> Stage | None:
    stage = _retry_stage(event)
    return RESET_STAGE[stage] if stage is not None and stage is not RetryStage.FULL else None


def _retry_reset(s: ArtifactState, event: Event) -> None:
    """A retry starts the artifact again from its stage (SPEC 9). The reset counts as a status change at
    the retry's time, so older events arriving late cannot undo it."""
    s.retry_count += 1
    stage = _retry_stage(event)
    if stage is not None and (s.status_at_ms is None or event.timestamp_ms >= s.status_at_ms):
        s.status = RESET_STATUS[stage]
        s.status_at_ms = event.timestamp_ms
        s.current_stage = RESET_STAGE[stage]
        s.stage_at_ms = event.timestamp_ms
        s.failed_stage = None


def _set_status(s: ArtifactState, event: Event, status: Status) -> None:
    s.status = status
    s.status_at_ms = event.timestamp_ms
    if event.pipeline_stage is not None:
        s.current_stage = event.pipeline_stage
        s.stage_at_ms = event.timestamp_ms
    if status is Status.FAILED:
        s.failed_stage = event.pipeline_stage or s.current_stage
        _set_error(s, event)
    else:
        s.failed_stage = None


def fold(
    events: list[Event], existing: dict[ArtifactKey, ArtifactState]
) -> tuple[dict[ArtifactKey, ArtifactState], list[Event]]:
    """Apply events in arrival order, each to the artifact of its own organization; returns the touched
    summaries (new objects; ``existing`` is left as it was) and the events with durations filled."""
    states: dict[ArtifactKey, ArtifactState] = {}
    out: list[Event] = []
    for event in events:
        key = event_key(event)
        if key is None:
            out.append(event)
            continue
        state = states.get(key)
        if state is None:
            known = existing.get(key)
            state = states[key] = copy(known) if known is not None else new_artifact(event)
        out.append(_apply_in_place(state, event))
    return {**existing, **states}, out
