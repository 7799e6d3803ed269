"""From the raw events of one hour to the snapshot parts of every scope (SPEC 6.1, 6.3), without I/O.

The storage layer hands over three streams computed in SQL and by one pass over the rows: per
(organization, event type) counts and sums, the stage-completion durations, and the end-to-end times of
the artifacts completed in the hour. Every row counts for the platform scope and, when it has one, for
its organization's scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.model import (
    STAGE_COMPLETION_TYPES,
    STAGE_FAILURE_TYPES,
    STAGE_OF_TYPE,
    EventType,
)
from voicemon.domain.snapshot import SnapshotParts

E = EventType


@dataclass(frozen=True, slots=True)
class TypeGroup:
    """Counts and exact sums of the events of one type and organization in the period."""

    organization_id: str | None
    event_type: EventType
    events: int
    cost_nusd: int
    confidence_sum_ppb: int
    confidence_count: int
    claims: int
    entities: int
    drafts: int
    # Durations (µs) of the group's events that are latency samples (stage completions).
    durations_us: NDArray[np.int64]


def _scopes(organization_id: str | None) -> tuple[str, ...]:
    return (PLATFORM_SCOPE,) if organization_id is None else (PLATFORM_SCOPE, organization_id)


def build_parts(
    groups: Iterable[TypeGroup], end_to_end_us: Iterable[tuple[str | None, NDArray[np.int64]]]
) -> dict[str, SnapshotParts]:
    """Snapshot parts per scope. The platform scope is always present, even for an empty hour."""
    parts: dict[str, SnapshotParts] = {PLATFORM_SCOPE: SnapshotParts()}

    def scope_parts(organization_id: str | None) -> list[SnapshotParts]:
        out = []
        for scope in _scopes(organization_id):
            found = parts.get(scope)
            if found is None:
                found = parts[scope] = SnapshotParts()
            out.append(found)
        return out

    for g in groups:
        stage = STAGE_OF_TYPE[g.event_type]
        for p in scope_parts(g.organization_id):
            _add_group(p, g)
            if len(g.durations_us) and stage is not None and g.event_type in STAGE_COMPLETION_TYPES:
                p.stages[stage].latency.add_many_us(g.durations_us)
    for organization_id, values in end_to_end_us:
        if len(values):
            for p in scope_parts(organization_id):
                p.end_to_end.add_many_us(values)
    return parts


def _add_group(p: SnapshotParts, g: TypeGroup) -> None:
    t = g.event_type
    p.cost_nusd += g.cost_nusd
    if t is E.ARTIFACT_RECEIVED:
        p.received += g.events
    elif t is E.ARTIFACT_COMPLETED:
        p.completed += g.events
    elif t is E.ARTIFACT_FAILED:
        p.failed += g.events
    stage = STAGE_OF_TYPE[t]
    if t in STAGE_COMPLETION_TYPES and stage is not None:
        p.stages[stage].completed += g.events
    elif t in STAGE_FAILURE_TYPES and stage is not None:
        p.stages[stage].failed += g.events
    if t is E.TRANSCRIPTION_COMPLETED:
        p.transcript_confidence_sum_ppb += g.confidence_sum_ppb
        p.transcript_confidence_count += g.confidence_count
    elif t is E.CLAIMS_EXTRACTED:
        p.claim_confidence_sum_ppb += g.confidence_sum_ppb
        p.claim_confidence_count += g.confidence_count
        p.claims += g.claims
    elif t is E.ENTITY_RESOLUTION_COMPLETED:
        p.auto_resolved += g.events
        p.entities += g.entities
    elif t is E.ENTITY_NEEDS_DISAMBIGUATION:
        p.needs_disambiguation += g.events
        p.entities += g.entities
    elif t is E.DRAFTS_GENERATED:
        p.drafts += g.drafts
