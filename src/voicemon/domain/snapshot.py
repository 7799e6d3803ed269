"""Snapshot math (SPEC 6): additive parts, the one merge function, and rendering to the reply fields.

A snapshot is stored as *parts* that add up: counts, exact integer sums, and latency sketches. Everything
derived (rates, averages, percentiles) is computed from parts when a reply is rendered. Merging hours into
a day, or days into a range, is :func:`merge_parts`; no rate or percentile is ever averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from voicemon.domain.events import NANO_USD_PER_USD
from voicemon.domain.model import MEASURED_STAGES, Stage
from voicemon.domain.rates import failure_rate, safe_divide
from voicemon.domain.sketch import LatencySketch, merge_encoded_groups

US_PER_MS = 1000
PPB = 1_000_000_000
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


class Latency:
    """Latency samples: exact count and sum (µs), and a sketch for percentiles.

    A latency read from storage keeps its sketch encoded until someone needs it, so that merging many
    rows adds their bins as arrays (:meth:`merge_columns`) instead of decoding each one.
    """

    __slots__ = ("_blob", "_sketch", "count", "sum_us")

    def __init__(self, count: int = 0, sum_us: int = 0, blob: bytes | None = None) -> None:
        self.count = count
        self.sum_us = sum_us
        self._blob = blob
        self._sketch: LatencySketch | None = None

    @property
    def sketch(self) -> LatencySketch:
        if self._sketch is None:
            self._sketch = LatencySketch.from_bytes(self._blob)
            self._blob = None
        return self._sketch

    @sketch.setter
    def sketch(self, value: LatencySketch) -> None:
        self._sketch = value
        self._blob = None

    def encoded(self) -> bytes:
        if self._sketch is None:
            return self._blob or b""
        return self._sketch.to_bytes()

    def add_us(self, value_us: int) -> None:
        self.count += 1
        self.sum_us += value_us
        self.sketch.add(value_us / US_PER_MS)

    def add_many_us(self, values_us: Sequence[int] | NDArray[np.int64]) -> None:
        array = np.asarray(values_us, dtype=np.int64)
        self.count += len(array)
        self.sum_us += int(array.sum())
        self.sketch.add_many(array / US_PER_MS)

    def merge(self, other: Latency) -> None:
        self.count += other.count
        self.sum_us += other.sum_us
        self.sketch.merge(other.sketch)

    @classmethod
    def merge_columns(cls, columns: Sequence[Sequence[Latency]]) -> list[Latency]:
        """Merge each column of latencies into one; all their sketches are merged in one pass
        (:func:`~voicemon.domain.sketch.merge_encoded_groups`), still encoded."""
        blobs = [lat.encoded() for column in columns for lat in column]
        groups = [i for i, column in enumerate(columns) for _ in column]
        sketches = merge_encoded_groups(blobs, groups, len(columns))
        out = []
        for column, sketch in zip(columns, sketches, strict=True):
            merged = cls(sum(lat.count for lat in column), sum(lat.sum_us for lat in column))
            merged.sketch = sketch
            out.append(merged)
        return out

    def render(self) -> dict[str, Any]:
        """``{count, avg, p50, p95, p99}`` in ms; null means "no samples", never NaN."""
        if self.count == 0:
            return {"count": 0, "avg": None, "p50": None, "p95": None, "p99": None}
        out: dict[str, Any] = {"count": self.count, "avg": self.sum_us / self.count / US_PER_MS}
        values = self.sketch.quantiles([q for _, q in QUANTILES])
        for (name, _), value in zip(QUANTILES, values, strict=True):
            out[name] = value
        return out


@dataclass(slots=True)
class StageParts:
    completed: int = 0
    failed: int = 0
    latency: Latency = field(default_factory=Latency)


@dataclass(slots=True)
class SnapshotParts:
    """The additive content of one snapshot row (one period, one scope)."""

    received: int = 0
    completed: int = 0
    failed: int = 0
    stages: dict[Stage, StageParts] = field(
        default_factory=lambda: {s: StageParts() for s in MEASURED_STAGES}
    )
    end_to_end: Latency = field(default_factory=Latency)
    transcript_confidence_sum_ppb: int = 0
    transcript_confidence_count: int = 0
    claim_confidence_sum_ppb: int = 0
    claim_confidence_count: int = 0
    auto_resolved: int = 0
    needs_disambiguation: int = 0
    claims: int = 0
    entities: int = 0
    drafts: int = 0
    cost_nusd: int = 0

    def merge(self, other: SnapshotParts) -> None:
        """Add ``other`` into this one: counts and sums add, sketches merge."""
        self._add_counts(other)
        for stage, parts in other.stages.items():
            self.stages[stage].latency.merge(parts.latency)
        self.end_to_end.merge(other.end_to_end)

    def _add_counts(self, other: SnapshotParts) -> None:
        self.received += other.received
        self.completed += other.completed
        self.failed += other.failed
        for stage, parts in other.stages.items():
            mine = self.stages[stage]
            mine.completed += parts.completed
            mine.failed += parts.failed
        self.transcript_confidence_sum_ppb += other.transcript_confidence_sum_ppb
        self.transcript_confidence_count += other.transcript_confidence_count
        self.claim_confidence_sum_ppb += other.claim_confidence_sum_ppb
        self.claim_confidence_count += other.claim_confidence_count
        self.auto_resolved += other.auto_resolved
        self.needs_disambiguation += other.needs_disambiguation
        self.claims += other.claims
        self.entities += other.entities
        self.drafts += other.drafts
        self.cost_nusd += other.cost_nusd


def merge_parts(parts: Iterable[SnapshotParts], *, stage_latency: bool = True) -> SnapshotParts:
    """The one merge: serves the daily roll-up and every range query. Counts and sums add; each
    latency's sketches merge at once. ``stage_latency=False`` skips the stage sketches when only the
    counts and the end-to-end latency are wanted (the organization breakdown)."""
    group = list(parts)
    total = SnapshotParts()
    for p in group:
        total._add_counts(p)
    stages = MEASURED_STAGES if stage_latency else ()
    columns = [[p.end_to_end for p in group], *([p.stages[s].latency for p in group] for s in stages)]
    total.end_to_end, *stage_latencies = Latency.merge_columns(columns)
    for stage, latency in zip(stages, stage_latencies, strict=True):
        total.stages[stage].latency = latency
    return total


def _mean_ppb(sum_ppb: int, count: int) -> float | None:
    return sum_ppb / count / PPB if count else None


def render_parts(p: SnapshotParts) -> dict[str, Any]:
    """The metric fields of SPEC 6.1 (everything but the period and scope fields)."""
    resolved_total = p.auto_resolved + p.needs_disambiguation
    auto_rate = safe_divide(p.auto_resolved, resolved_total)
    cost_usd = p.cost_nusd / NANO_USD_PER_USD
    return {
        "artifacts_received": p.received,
        "artifacts_completed": p.completed,
        "artifacts_failed": p.failed,
        "overall_failure_rate": failure_rate(p.completed, p.failed),
        "stages": [
            {
                "stage": stage.value,
                "completed": p.stages[stage].completed,
                "failed": p.stages[stage].failed,
                "failure_rate": failure_rate(p.stages[stage].completed, p.stages[stage].failed),
                "latency_ms": p.stages[stage].latency.render(),
            }
            for stage in MEASURED_STAGES
        ],
        "end_to_end_latency_ms": p.end_to_end.render(),
        "avg_transcript_confidence": _mean_ppb(
            p.transcript_confidence_sum_ppb, p.transcript_confidence_count
        ),
        "avg_claim_confidence": _mean_ppb(p.claim_confidence_sum_ppb, p.claim_confidence_count),
        "auto_resolution_rate": auto_rate,
        "disambiguation_rate": 1.0 - auto_rate if resolved_total else 0.0,
        "total_claims_extracted": p.claims,
        "total_entities_resolved": p.entities,
        "total_drafts_generated": p.drafts,
        "total_ai_cost_usd": cost_usd,
        "avg_cost_per_artifact_usd": safe_divide(cost_usd, p.received),
    }
