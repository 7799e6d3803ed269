"""From the raw events of one hour to the snapshot parts of every scope (SPEC 6.1, 6.3), without I/O.

The storage layer hands over three streams computed in SQL and by one pass over the rows: per
(organization, event type) counts and sums, the durations that are latency samples, and the end-to-end
times of the artifacts completed in the hour. Which of them each part adds up is its declared source
(:mod:`~voicemon.domain.snapshot_fields`). Every row counts for the platform scope and, when it has one,
for its organization's scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.model import EventType
from voicemon.domain.snapshot import SnapshotParts
from voicemon.domain.snapshot_fields import Measure
from voicemon.domain.snapshot_layout import COUNT_SLOTS, LATENCY_SLOTS


@dataclass(frozen=True, slots=True)
class TypeGroup:
    """Counts and exact sums of the events of one type and organization in the period: every measure."""

    organization_id: str | None
    event_type: EventType
    totals: Mapping[Measure, int]
    # Durations (µs) of the group's events that are latency samples (SAMPLED_TYPES).
    durations_us: NDArray[np.int64]


# What a group of each type adds to: (count slot, measure) pairs, and the latency slots its durations
# feed; the latency slots fed by end-to-end times. Read from the declared sources, once.
_ADDS: dict[EventType, tuple[tuple[int, Measure], ...]] = {
    t: tuple((s.index, s.measure) for s in COUNT_SLOTS if s.types is None or t in s.types) for t in EventType
}
_SAMPLES: dict[EventType, tuple[int, ...]] = {
    t: tuple(s.index for s in LATENCY_SLOTS if s.types is not None and t in s.types) for t in EventType
}
_END_TO_END: tuple[int, ...] = tuple(s.index for s in LATENCY_SLOTS if s.types is None)


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
        adds = [(i, g.totals[m]) for i, m in _ADDS[g.event_type]]
        samples = _SAMPLES[g.event_type] if len(g.durations_us) else ()
        for p in scope_parts(g.organization_id):
            for i, value in adds:
                p.counts[i] += value
            for i in samples:
                p.latencies[i].add_many_us(g.durations_us)
    for organization_id, values in end_to_end_us:
        if len(values):
            for p in scope_parts(organization_id):
                for i in _END_TO_END:
                    p.latencies[i].add_many_us(values)
    return parts
