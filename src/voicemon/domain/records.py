"""What reads return: frozen records that storage fills and use cases hand to every entry point.

They are data, not rows: the API, the CLI and (later) the dashboard and exports render them without
knowing how they are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicemon.domain.events import Event
from voicemon.domain.snapshot import SnapshotParts


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Filters of an event list; they combine with AND. Times are epoch ms, ``[start, end)``."""

    event_type: str | None = None
    pipeline_stage: str | None = None
    organization_id: str | None = None
    artifact_id: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored; ``seq`` orders events of the same timestamp."""

    seq: int
    event: Event


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One stored snapshot row: a period of one scope (``""`` for the platform)."""

    period_type: str
    period_start_ms: int
    scope: str
    computed_ms: int
    parts: SnapshotParts


@dataclass(frozen=True, slots=True)
class OrgRecord:
    """An entry of the organization directory."""

    organization_id: str
    name: str
    updated_ms: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a job: a scheduled tick or a run by hand. ``summary`` is the job's JSON report."""

    run_id: str
    name: str
    trigger: str
    scheduled_for_ms: int
    target_ms: int | None
    status: str
    owner: str | None
    lease_until_ms: int | None
    started_ms: int | None
    finished_ms: int | None
    summary: str | None
    error: str | None
