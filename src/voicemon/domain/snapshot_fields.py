"""The fields of a snapshot, declared once (SPEC 6.1): what is stored, how it merges, how it is shown.

:data:`FIELDS` lists, in reply order, every additive part of a snapshot and every reply field computed from
parts. An entry is one of:

- :class:`Count`: an integer that adds up (a count, or an exact integer sum). It merges by adding, is
  stored in one BIGINT column, is one measure of an hour's raw events added up (:class:`Source`), and is
  shown as is when it has a reply name.
- :class:`Sketched`: latency samples: an exact count and sum (µs) that add, and a sketch that merges.
  Stored in ``<column>_count``, ``<column>_sum_us`` and ``<column>_sketch``; shown as ``{count, avg, p50,
  p95, p99}`` in ms.
- :class:`Derived`: a reply field computed from parts when a reply is rendered (a rate, a mean). It is
  never stored, so never merged: no rate or mean is ever averaged (SPEC 6.2).
- :class:`StageGroup`: entries repeated for each measured stage, shown as a list with one item per stage.

The rest follows from this list (:mod:`~voicemon.domain.snapshot_layout` numbers its parts):
:class:`~voicemon.domain.snapshot.SnapshotParts`, its merge, stored form and rendering; the aggregation of
raw events; the ``snapshots`` table; the reply models. A new field is a new entry here, plus a migration
that adds its columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum

from voicemon.domain.events import nusd_to_usd
from voicemon.domain.model import (
    MEASURED_STAGES,
    STAGE_COMPLETION_TYPES,
    STAGE_FAILURE_TYPES,
    EventType,
    Stage,
)
from voicemon.domain.rates import failure_rate, safe_divide

PPB = 1_000_000_000


class Measure(StrEnum):
    """What the raw events of one (organization, event type) group add up to
    (:class:`~voicemon.domain.aggregation.TypeGroup`)."""

    EVENTS = "events"
    COST_NUSD = "cost_nusd"
    CONFIDENCE_SUM_PPB = "confidence_sum_ppb"
    CONFIDENCE_COUNT = "confidence_count"
    CLAIMS = "claims"
    ENTITIES = "entities"
    DRAFTS = "drafts"


@dataclass(frozen=True, slots=True)
class Source:
    """An hour's value of a count: ``measure`` added up over the events of ``types`` (None: every type).
    In a stage group, only the types of the item's stage count."""

    measure: Measure
    types: frozenset[EventType] | None = None


def of(measure: Measure, *types: EventType) -> Source:
    return Source(measure, frozenset(types))


@dataclass(frozen=True, slots=True)
class Durations:
    """Latency samples: the durations (SPEC 3.4) of the events of ``types``; in a stage group, of the
    item's stage only."""

    types: frozenset[EventType]


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """Latency samples: completed minus received, for each artifact completed in the period."""


@dataclass(frozen=True, slots=True)
class Count:
    """An additive integer, the attribute ``name`` of SnapshotParts. Its column is ``column`` (default: the
    name), prefixed with ``<stage>_`` in a stage group; shown under ``reply``, if any."""

    name: str
    source: Source
    _: KW_ONLY
    column: str | None = None
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class Sketched:
    """Latency samples (count, exact sum in µs, sketch), the attribute ``name`` of SnapshotParts. Stored in
    ``<column>_count``, ``<column>_sum_us`` and ``<column>_sketch``; in a stage group the columns are
    prefixed with ``<stage>_`` and every stage's sketch is packed in the group's ``sketch_column``."""

    name: str
    samples: Durations | EndToEnd
    _: KW_ONLY
    column: str | None = None
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class Derived:
    """A reply field: ``compute`` applied to the parts named by ``inputs`` (of the item's stage, in a
    stage group). ``nullable``: it may be None (JSON null) when there is nothing to compute from."""

    reply: str
    inputs: tuple[str, ...]
    compute: Callable[..., float | None]
    _: KW_ONLY
    nullable: bool = False


Member = Count | Sketched | Derived


@dataclass(frozen=True, slots=True)
class StageGroup:
    """``fields`` once per stage of ``stages``. On SnapshotParts, ``name`` is a dict of one object per
    stage; in a reply, ``reply`` is a list of one object per stage, whose first key ``item_key`` names
    it."""

    name: str
    stages: tuple[Stage, ...]
    fields: tuple[Member, ...]
    _: KW_ONLY
    reply: str
    sketch_column: str
    item_key: str = "stage"


Entry = Count | Sketched | Derived | StageGroup


def _mean_ppb(sum_ppb: int, count: int) -> float | None:
    return sum_ppb / count / PPB if count else None


def _share(part: int, rest: int) -> float:
    return safe_divide(part, part + rest)


def _rest_share(part: int, rest: int) -> float:
    """1 - the share of ``part`` when there was anything, else 0 (a share of nothing is 0, either way)."""
    return 1.0 - _share(part, rest) if part + rest else 0.0


def _usd_per(cost_nusd: int, items: int) -> float:
    return safe_divide(nusd_to_usd(cost_nusd), items)


E = EventType
M = Measure

FIELDS: tuple[Entry, ...] = (
    Count(
        "received", of(M.EVENTS, E.ARTIFACT_RECEIVED), column="artifacts_received", reply="artifacts_received"
    ),
    Count(
        "completed",
        of(M.EVENTS, E.ARTIFACT_COMPLETED),
        column="artifacts_completed",
        reply="artifacts_completed",
    ),
    Count("failed", of(M.EVENTS, E.ARTIFACT_FAILED), column="artifacts_failed", reply="artifacts_failed"),
    Derived("overall_failure_rate", ("completed", "failed"), failure_rate),
    StageGroup(
        "stages",
        MEASURED_STAGES,
        (
            Count("completed", Source(M.EVENTS, STAGE_COMPLETION_TYPES), reply="completed"),
            Count("failed", Source(M.EVENTS, STAGE_FAILURE_TYPES), reply="failed"),
            Derived("failure_rate", ("completed", "failed"), failure_rate),
            # Failures keep their duration on the event, but are not latency samples.
            Sketched("latency", Durations(STAGE_COMPLETION_TYPES), reply="latency_ms"),
        ),
        reply="stages",
        sketch_column="stage_sketches",
    ),
    Sketched("end_to_end", EndToEnd(), column="e2e", reply="end_to_end_latency_ms"),
    Count("transcript_confidence_sum_ppb", of(M.CONFIDENCE_SUM_PPB, E.TRANSCRIPTION_COMPLETED)),
    Count("transcript_confidence_count", of(M.CONFIDENCE_COUNT, E.TRANSCRIPTION_COMPLETED)),
    Count("claim_confidence_sum_ppb", of(M.CONFIDENCE_SUM_PPB, E.CLAIMS_EXTRACTED)),
    Count("claim_confidence_count", of(M.CONFIDENCE_COUNT, E.CLAIMS_EXTRACTED)),
    Derived(
        "avg_transcript_confidence",
        ("transcript_confidence_sum_ppb", "transcript_confidence_count"),
        _mean_ppb,
        nullable=True,
    ),
    Derived(
        "avg_claim_confidence",
        ("claim_confidence_sum_ppb", "claim_confidence_count"),
        _mean_ppb,
        nullable=True,
    ),
    Count("auto_resolved", of(M.EVENTS, E.ENTITY_RESOLUTION_COMPLETED)),
    Count("needs_disambiguation", of(M.EVENTS, E.ENTITY_NEEDS_DISAMBIGUATION)),
    Derived("auto_resolution_rate", ("auto_resolved", "needs_disambiguation"), _share),
    Derived("disambiguation_rate", ("auto_resolved", "needs_disambiguation"), _rest_share),
    Count("claims", of(M.CLAIMS, E.CLAIMS_EXTRACTED), column="total_claims", reply="total_claims_extracted"),
    Count(
        "entities",
        of(M.ENTITIES, E.ENTITY_RESOLUTION_COMPLETED, E.ENTITY_NEEDS_DISAMBIGUATION),
        column="total_entities",
        reply="total_entities_resolved",
    ),
    Count("drafts", of(M.DRAFTS, E.DRAFTS_GENERATED), column="total_drafts", reply="total_drafts_generated"),
    Count("cost_nusd", Source(M.COST_NUSD)),
    Derived("total_ai_cost_usd", ("cost_nusd",), nusd_to_usd),
    Derived("avg_cost_per_artifact_usd", ("cost_nusd", "received"), _usd_per),
)

# GET /v1/metrics/orgs: these reply fields of each organization's merged parts, in this order.
ORG_BREAKDOWN: tuple[str, ...] = (
    "artifacts_received",
    "artifacts_completed",
    "artifacts_failed",
    "overall_failure_rate",
    "total_ai_cost_usd",
    "avg_cost_per_artifact_usd",
    "end_to_end_latency_ms",
)

# GET /v1/metrics/stages.
STAGE_BREAKDOWN: tuple[str, ...] = ("stages", "end_to_end_latency_ms")
