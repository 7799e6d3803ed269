"""An artifact's summary, folded from its events in any order (SPEC 4, 3.4).

:func:`apply_event` is the whole state machine. The status is the one implied by the status-changing event
with the latest ``timestamp``; a tie goes to the later arrival. The summary also remembers when each stage
last started, so a completion that arrives in a later request than its ``*_started`` still gets its
duration (the earlier system's latencies were always 0 because it could not do this).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from voicemon.domain.events import MAX_DURATION_MS, Event
from voicemon.domain.model import (
    ACTIVE_STATUSES,
    STARTED_TYPES,
    TIMED_TYPES,
    EventType,
    Stage,
    Status,
    status_set_by,
)
from voicemon.domain.retries import RESET_STAGE, RESET_STATUS, RetryStage


@dataclass(frozen=True, slots=True)
class ArtifactState:
    """One row of artifact summary. ``status_at_ms`` is the time of the event that set ``status``."""

    artifact_id: str
    organization_id: str | None = None
    voice_note_id: str | None = None
    coach_user_id: str | None = None
    source_channel: str | None = None
    status: Status = Status.RECEIVED
    status_at_ms: int | None = None
    current_stage: Stage | None = None
    failed_stage: Stage | None = None
    last_error_code: str | None = None
    last_error_message: str | None = None
    received_at_ms: int | None = None
    completed_at_ms: int | None = None
    first_event_at_ms: int = 0
    last_event_at_ms: int = 0
    event_count: int = 0
    retry_count: int = 0
    total_cost_nusd: int = 0
    stage_started_ms: dict[str, int] = field(default_factory=dict)

    @property
    def listed_at_ms(self) -> int:
        """The time lists sort by: when it was received, or first seen if no receipt arrived yet."""
        return self.received_at_ms if self.received_at_ms is not None else self.first_event_at_ms

    def is_stuck(self, now_ms: int, stuck_after_ms: int) -> bool:
        return self.status in ACTIVE_STATUSES and self.last_event_at_ms < now_ms - stuck_after_ms


def new_artifact(event: Event) -> ArtifactState:
    assert event.artifact_id is not None
    return ArtifactState(
        artifact_id=event.artifact_id,
        first_event_at_ms=event.timestamp_ms,
        last_event_at_ms=event.timestamp_ms,
    )


def apply_event(state: ArtifactState, event: Event) -> tuple[ArtifactState, Event]:
    """Fold one newly stored event into the summary.

    Returns the new summary and the event with its duration worked out from the matching ``*_started``
    event when it had none of its own.
    """
    if event.duration_ms is None and event.event_type in TIMED_TYPES and event.pipeline_stage is not None:
        started = state.stage_started_ms.get(event.pipeline_stage.value)
        if started is not None and started <= event.timestamp_ms < started + MAX_DURATION_MS:
            event = replace(event, duration_ms=float(event.timestamp_ms - started))

    changes: dict[str, object] = {
        "event_count": state.event_count + 1,
        "total_cost_nusd": state.total_cost_nusd + event.cost_nusd,
        "first_event_at_ms": min(state.first_event_at_ms, event.timestamp_ms),
        "last_event_at_ms": max(state.last_event_at_ms, event.timestamp_ms),
    }
    for name in ("organization_id", "voice_note_id", "coach_user_id", "source_channel"):
        if getattr(state, name) is None and getattr(event, name) is not None:
            changes[name] = getattr(event, name)

    if event.event_type is EventType.ARTIFACT_RECEIVED and (
        state.received_at_ms is None or event.timestamp_ms < state.received_at_ms
    ):
        changes["received_at_ms"] = event.timestamp_ms
    if event.event_type is EventType.ARTIFACT_COMPLETED and (
        state.completed_at_ms is None or event.timestamp_ms > state.completed_at_ms
    ):
        changes["completed_at_ms"] = event.timestamp_ms

    started_stage = STARTED_TYPES.get(event.event_type)
    if started_stage is not None:
        known = state.stage_started_ms.get(started_stage.value)
        if known is None or event.timestamp_ms >= known:
            changes["stage_started_ms"] = {**state.stage_started_ms, started_stage.value: event.timestamp_ms}

    if event.event_type is EventType.RETRY_INITIATED:
        changes.update(_retry_reset(state, event))
    elif (
        event.event_type is EventType.RETRY_FAILED
        and state.status is not Status.FAILED
        and (state.status_at_ms is None or event.timestamp_ms >= state.status_at_ms)
    ):
        changes.update(_status_change(state, event, Status.FAILED))
        changes["failed_stage"] = _retry_stage_of(event)
    status = status_set_by(event.event_type, event.new_status)
    if status is not None and (state.status_at_ms is None or event.timestamp_ms >= state.status_at_ms):
        changes.update(_status_change(state, event, status))
    return replace(state, **changes), event  # type: ignore[arg-type]


def _retry_stage(event: Event) -> RetryStage | None:
    value = event.metadata.get("retry_stage") if event.metadata else None
    try:
        return RetryStage(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _retry_stage_of(event: Event) -> Stage | None:
    stage = _retry_stage(event)
    return RESET_STAGE[stage] if stage is not None and stage is not RetryStage.FULL else None


def _retry_reset(state: ArtifactState, event: Event) -> dict[str, object]:
    """A retry starts the artifact again from its stage (SPEC 9). The reset counts as a status change at
    the retry's time, so older events arriving late cannot undo it."""
    changes: dict[str, object] = {"retry_count": state.retry_count + 1}
    stage = _retry_stage(event)
    if stage is not None and (state.status_at_ms is None or event.timestamp_ms >= state.status_at_ms):
        changes.update(
            status=RESET_STATUS[stage],
            status_at_ms=event.timestamp_ms,
            current_stage=RESET_STAGE[stage],
            failed_stage=None,
        )
    return changes


def _status_change(state: ArtifactState, event: Event, status: Status) -> dict[str, object]:
    changes: dict[str, object] = {"status": status, "status_at_ms": event.timestamp_ms}
    if event.pipeline_stage is not None:
        changes["current_stage"] = event.pipeline_stage
    if status is Status.FAILED:
        changes["failed_stage"] = event.pipeline_stage or state.current_stage
        changes["last_error_code"] = event.error_code
        changes["last_error_message"] = event.error_message
    else:
        changes["failed_stage"] = None
    return changes


def fold(
    events: list[Event], existing: dict[str, ArtifactState]
) -> tuple[dict[str, ArtifactState], list[Event]]:
    """Apply events in arrival order; returns the touched summaries and the events with durations filled."""
    states = dict(existing)
    out: list[Event] = []
    for event in events:
        if event.artifact_id is None:
            out.append(event)
            continue
        state = states.get(event.artifact_id) or new_artifact(event)
        state, timed = apply_event(state, event)
        states[state.artifact_id] = state
        out.append(timed)
    return states, out
