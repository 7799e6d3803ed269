"""Domain values to reply dicts: RFC 3339 UTC times, dollars from nano-dollars, enums as strings."""

from __future__ import annotations

from typing import Any

import orjson

from voicemon.domain.artifacts import ArtifactState
from voicemon.domain.coverage import RangePlan
from voicemon.domain.events import nusd_to_usd
from voicemon.domain.exports import ARTIFACT_COLUMNS, artifact_cells
from voicemon.domain.records import RunRecord, StoredEvent
from voicemon.domain.retries import Retry
from voicemon.domain.snapshot import SnapshotParts, render_parts
from voicemon.domain.timeutil import format_time
from voicemon.service.queries import Realtime


def _time(ms: int | None) -> str | None:
    return format_time(ms) if ms is not None else None


def event_out(stored: StoredEvent) -> dict[str, Any]:
    e = stored.event
    return {
        "event_id": e.event_id,
        "event_type": e.event_type.value,
        "artifact_id": e.artifact_id,
        "organization_id": e.organization_id,
        "voice_note_id": e.voice_note_id,
        "coach_user_id": e.coach_user_id,
        "pipeline_stage": e.pipeline_stage.value if e.pipeline_stage else None,
        "timestamp": format_time(e.timestamp_ms),
        "received_at": format_time(e.received_ms),
        "stage_started_at": _time(e.stage_started_at_ms),
        "stage_completed_at": _time(e.stage_completed_at_ms),
        "duration_ms": e.duration_ms,
        "previous_status": e.previous_status.value if e.previous_status else None,
        "new_status": e.new_status.value if e.new_status else None,
        "error_message": e.error_message,
        "error_code": e.error_code,
        "metadata": dict(e.metadata) if e.metadata is not None else None,
    }


def artifact_out(s: ArtifactState, stuck: bool) -> dict[str, Any]:
    """An artifact as the lists show it: exactly the columns of its export (``docs/exports.md``)."""
    return dict(zip(ARTIFACT_COLUMNS, artifact_cells(s, stuck), strict=True))


def realtime_out(r: Realtime) -> dict[str, Any]:
    counts: dict[str, Any] = {k: v for k, v in r.counts.items() if k != "ai_cost_nusd"}
    counts["ai_cost_usd"] = nusd_to_usd(r.counts["ai_cost_nusd"])
    body: dict[str, Any] = {
        "window_start": format_time(r.window_start_ms),
        "window_end": format_time(r.window_end_ms),
        "counts": counts,
        "failure_rate": r.failure_rate,
        # The counters are kept at ingestion: they hold everything committed up to now.
        "data_through": format_time(r.window_end_ms),
    }
    if r.organization_id is not None:
        body["organization_id"] = r.organization_id
    return body


def snapshot_out(
    period_type: str,
    start_ms: int,
    end_ms: int,
    organization_id: str | None,
    computed_ms: int,
    parts: SnapshotParts,
) -> dict[str, Any]:
    """A snapshot as SPEC 6.1 shows it; a platform-wide one has no organization_id key at all."""
    body: dict[str, Any] = {
        "period_type": period_type,
        "period_start": format_time(start_ms),
        "period_end": format_time(end_ms),
    }
    if organization_id:
        body["organization_id"] = organization_id
    body["computed_at"] = format_time(computed_ms)
    body.update(render_parts(parts))
    return body


def run_out(r: RunRecord) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "name": r.name,
        "trigger": r.trigger,
        "scheduled_for": format_time(r.scheduled_for_ms),
        "target": _time(r.target_ms),
        "status": r.status,
        "started_at": _time(r.started_ms),
        "finished_at": _time(r.finished_ms),
        "summary": orjson.loads(r.summary) if r.summary else None,
        "error": r.error,
    }


def retry_out(r: Retry) -> dict[str, Any]:
    return {
        "retry_id": r.retry_id,
        "artifact_id": r.artifact_id,
        "organization_id": r.organization_id,
        "stage": r.stage.value,
        "attempt": r.attempt,
        "requested_by": r.requested_by,
        "reason": r.reason,
        "status": r.status.value,
        "from_status": r.from_status.value,
        "created_at": format_time(r.created_ms),
        "dispatched_at": _time(r.dispatched_ms),
        "finished_at": _time(r.finished_ms),
        "error": r.error,
    }


def coverage_out(plan: RangePlan) -> dict[str, Any]:
    """What a range answer covers (SPEC 7), from its plan."""
    return {
        "period_start": format_time(plan.period_start_ms),
        "period_end": format_time(plan.period_end_ms),
        "periods_expected": len(plan.expected),
        "periods_aggregated": len(plan.stored),
        "periods_live": len(plan.live),
        "missing": [format_time(s) for s in plan.missing],
        "stale": [format_time(s) for s in plan.stale],
        "data_through": _time(plan.data_through_ms),
        "live_from": _time(plan.live_from_ms),
    }
