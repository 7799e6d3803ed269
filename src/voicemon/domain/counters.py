"""Live counters (SPEC 5): what one event adds to its minute bucket, platform-wide and for its organization.

Buckets are keyed by ``(scope, minute)``. The platform-wide scope is the empty string, a value no
organization id can take (ids must be non-empty), so one unique key covers both kinds of row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from voicemon.domain.events import Event
from voicemon.domain.model import FAILURE_TYPES, EventType
from voicemon.domain.timeutil import MINUTE_MS, floor_to

PLATFORM_SCOPE = ""

# Counter columns in reply order; ai_cost is kept in nano-USD so that sums are exact.
COUNTER_NAMES: tuple[str, ...] = (
    "artifacts_received",
    "artifacts_completed",
    "artifacts_failed",
    "transcriptions_completed",
    "claims_extracted",
    "entities_resolved",
    "drafts_generated",
    "failures",
    "ai_cost_nusd",
)

_COUNTED_BY_TYPE: dict[EventType, str] = {
    EventType.ARTIFACT_RECEIVED: "artifacts_received",
    EventType.ARTIFACT_COMPLETED: "artifacts_completed",
    EventType.TRANSCRIPTION_COMPLETED: "transcriptions_completed",
    EventType.CLAIMS_EXTRACTED: "claims_extracted",
    EventType.ENTITY_RESOLUTION_COMPLETED: "entities_resolved",
    EventType.ENTITY_NEEDS_DISAMBIGUATION: "entities_resolved",
    EventType.DRAFTS_GENERATED: "drafts_generated",
}


def event_counts(event: Event) -> dict[str, int]:
    """The counters one event increments, with the amount."""
    counts: dict[str, int] = {}
    name = _COUNTED_BY_TYPE.get(event.event_type)
    if name is not None:
        counts[name] = 1
    if event.event_type is EventType.ARTIFACT_FAILED:
        counts["artifacts_failed"] = 1
    if event.event_type in FAILURE_TYPES:
        counts["failures"] = 1
    if event.cost_nusd:
        counts["ai_cost_nusd"] = event.cost_nusd
    return counts


@dataclass(frozen=True, slots=True)
class BucketDelta:
    scope: str
    minute_ms: int
    counts: dict[str, int]


def bucket_deltas(events: Iterable[Event]) -> list[BucketDelta]:
    """Sum the increments of many events in memory: one delta per (scope, minute) that changed."""
    sums: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTER_NAMES, 0))
    for event in events:
        counts = event_counts(event)
        if not counts:
            continue
        minute = floor_to(event.timestamp_ms, MINUTE_MS)
        scopes = [PLATFORM_SCOPE]
        if event.organization_id is not None:
            scopes.append(event.organization_id)
        for scope in scopes:
            bucket = sums[(scope, minute)]
            for name, amount in counts.items():
                bucket[name] += amount
    return [BucketDelta(scope, minute, counts) for (scope, minute), counts in sums.items()]
