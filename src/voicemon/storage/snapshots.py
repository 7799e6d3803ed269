"""Snapshot rows and the late-data versions of periods; the raw-event reads an hourly aggregation needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, and_, case, delete, false, func, or_, select

from voicemon.domain.aggregation import TypeGroup
from voicemon.domain.model import STAGE_COMPLETION_TYPES, EventType, Stage
from voicemon.domain.periods import Cover
from voicemon.domain.records import SnapshotRow
from voicemon.domain.sketch import merge_encoded_groups
from voicemon.domain.snapshot import Latency, SnapshotParts
from voicemon.storage.dialect import concat_integers, integers_of, send_many, upsert_add_sql, upsert_replace
from voicemon.storage.tables import STAGE_KEYS, artifacts, events, period_versions, snapshots

# --- raw events of one period ---------------------------------------------------------------------------


def type_groups(conn: Connection, start_ms: int, end_ms: int) -> list[TypeGroup]:
    """One pass in SQL over ``[start_ms, end_ms)``: per (organization, event type) counts, exact sums,
    and the list of durations of stage completions (the latency samples), as one string per group."""
    e = events.c
    samples = case((e.event_type.in_(COMPLETION_TYPES), e.duration_us), else_=None)
    query = (
        select(
            e.organization_id,
            e.event_type,
            func.count(),
            func.coalesce(func.sum(e.cost_nusd), 0),
            func.coalesce(func.sum(e.confidence_ppb), 0),
            func.count(e.confidence_ppb),
            func.coalesce(func.sum(e.claim_count), 0),
            func.coalesce(func.sum(e.entity_count), 0),
            func.coalesce(func.sum(e.draft_count), 0),
            concat_integers(conn, samples),
        )
        .where(e.ts_ms >= start_ms, e.ts_ms < end_ms)
        .group_by(e.organization_id, e.event_type)
    )
    return [
        TypeGroup(
            org,
            EventType(t),
            int(n),
            int(cost),
            int(conf),
            int(nconf),
            int(cl),
            int(en),
            int(dr),
            integers_of(durations),
        )
        for org, t, n, cost, conf, nconf, cl, en, dr, durations in conn.execute(query)
    ]


COMPLETION_TYPES = sorted(t.value for t in STAGE_COMPLETION_TYPES)


def end_to_end_samples(
    conn: Connection, start_ms: int, end_ms: int
) -> list[tuple[str | None, NDArray[np.int64]]]:
    """Per organization, completed minus received (µs) of each artifact completion in the period, as one
    string per organization from the GROUP BY (like the stage durations of :func:`type_groups`)."""
    e = events.c
    a = artifacts.c
    query = (
        select(e.organization_id, concat_integers(conn, (e.ts_ms - a.received_at_ms) * 1000))
        .select_from(
            events.join(
                artifacts,
                and_(a.owner == func.coalesce(e.organization_id, ""), a.artifact_id == e.artifact_id),
            )
        )
        .where(
            e.ts_ms >= start_ms,
            e.ts_ms < end_ms,
            e.event_type == EventType.ARTIFACT_COMPLETED.value,
            a.received_at_ms.is_not(None),
            a.received_at_ms <= e.ts_ms,
        )
        .group_by(e.organization_id)
    )
    return [(org, integers_of(values)) for org, values in conn.execute(query)]


# --- period versions --------------------------------------------------------------------------------------


def bump_versions(conn: Connection, periods: Mapping[tuple[str, int], int]) -> None:
    """Add to the version of every (period type, start) given: ingestion marks the hours and days that
    received events; writing an hour or a day marks the day and blocks that merge it. Rows are taken in
    sorted order, so two writers never wait on each other in a cycle."""
    if not periods:
        return
    send_many(conn, _BUMP_SQL, [(t, s, n) for (t, s), n in sorted(periods.items())])


_BUMP_SQL = upsert_add_sql(period_versions, ("period_type", "period_start_ms"), ("version",))


def versions(
    conn: Connection, period_type: str, start_ms: int, end_ms: int
) -> dict[int, tuple[int, int | None]]:
    """(version, aggregated_version) of the periods of a type that start in ``[start_ms, end_ms)``."""
    v = period_versions.c
    query = select(v.period_start_ms, v.version, v.aggregated_version).where(
        v.period_type == period_type, v.period_start_ms >= start_ms, v.period_start_ms < end_ms
    )
    return {int(s): (int(ver), None if agg is None else int(agg)) for s, ver, agg in conn.execute(query)}


def version_of(conn: Connection, period_type: str, start_ms: int) -> int:
    v = period_versions.c
    found = conn.scalar(select(v.version).where(v.period_type == period_type, v.period_start_ms == start_ms))
    return int(found or 0)


def fresh_periods(
    conn: Connection, period_types: Sequence[str], start_ms: int, end_ms: int
) -> set[tuple[str, int]]:
    """The (type, start) of the periods starting in ``[start_ms, end_ms)`` whose rows were computed from
    their current version: nothing they merge has changed since."""
    v = period_versions.c
    query = select(v.period_type, v.period_start_ms).where(
        v.period_type.in_(period_types),
        v.period_start_ms >= start_ms,
        v.period_start_ms < end_ms,
        v.aggregated_version == v.version,
    )
    return {(t, int(start)) for t, start in conn.execute(query)}


def stale_periods(conn: Connection, period_types: Sequence[str], oldest_ms: int) -> list[tuple[str, int]]:
    """The (type, start) of the periods starting at or after ``oldest_ms`` never computed, or marked
    since they were."""
    v = period_versions.c
    query = select(v.period_type, v.period_start_ms).where(
        v.period_type.in_(period_types),
        v.period_start_ms >= oldest_ms,
        or_(v.aggregated_version.is_(None), v.version > v.aggregated_version),
    )
    return [(t, int(start)) for t, start in conn.execute(query)]


# --- snapshot rows ----------------------------------------------------------------------------------------


def replace_period(
    conn: Connection,
    period_type: str,
    start_ms: int,
    parts: Mapping[str, SnapshotParts],
    computed_ms: int,
    read_version: int,
) -> None:
    """Replace every row of (period_type, start_ms) and record the version the rows were computed from.

    The version row is written first: its row lock makes concurrent replacements of one period (two
    servers, or the hourly and the daily job) take turns on PostgreSQL, so the second one's DELETE sees
    the first one's rows instead of both inserting and one failing on the primary key.
    """
    conn.execute(
        upsert_replace(conn, period_versions, ["period_type", "period_start_ms"], ["aggregated_version"]),
        [
            {
                "period_type": period_type,
                "period_start_ms": start_ms,
                "version": 0,
                "aggregated_version": read_version,
            }
        ],
    )
    conn.execute(
        delete(snapshots).where(
            snapshots.c.period_type == period_type, snapshots.c.period_start_ms == start_ms
        )
    )
    rows = [_to_row(period_type, start_ms, scope, p, computed_ms) for scope, p in sorted(parts.items())]
    conn.execute(snapshots.insert(), rows)


# Not a string, so that no organization id can ever mean "every scope".
ALL_SCOPES = None


def load_rows(
    conn: Connection, period_type: str, start_ms: int, end_ms: int, scope: str | None
) -> list[SnapshotRow]:
    """Rows whose period starts in ``[start_ms, end_ms)``, oldest first, for one scope ("" = platform),
    or for every scope, platform and organizations, when ``scope`` is :data:`ALL_SCOPES` (None)."""
    return load_cover(conn, period_type, Cover((), ((start_ms, end_ms),)), scope)


def _covered(base_type: str, cover: Cover) -> Any:
    """The rows a cover reads: its pieces whole, and the base rows of its gaps."""
    s = snapshots.c
    conds: list[Any] = [
        and_(s.period_type == base_type, s.period_start_ms >= a, s.period_start_ms < b) for a, b in cover.gaps
    ]
    starts: dict[str, list[int]] = {}
    for period_type, start in cover.pieces:
        starts.setdefault(period_type, []).append(start)
    conds += [and_(s.period_type == t, s.period_start_ms.in_(v)) for t, v in sorted(starts.items())]
    return or_(*conds) if conds else false()


def load_cover(conn: Connection, base_type: str, cover: Cover, scope: str | None) -> list[SnapshotRow]:
    """The rows of a cover for one scope ("" = platform), or every scope (:data:`ALL_SCOPES`)."""
    s = snapshots.c
    where = _covered(base_type, cover)
    if scope is not ALL_SCOPES:
        where = and_(where, s.scope == scope)
    query = select(snapshots).where(where).order_by(s.period_start_ms, s.scope)
    return [_from_row(dict(r._mapping)) for r in conn.execute(query)]


@dataclass(frozen=True, slots=True)
class ScopeTotals:
    """What the organization breakdown needs of one scope over a range: summed in SQL, plus the
    end-to-end sketches of its rows (merged by the caller)."""

    scope: str
    parts: SnapshotParts


def org_totals(conn: Connection, base_type: str, cover: Cover) -> list[ScopeTotals]:
    """Per organization over a cover, in one read of the rows: counts and sums added as exact int64
    arrays, end-to-end sketches merged in one pass. (A GROUP BY for the sums would read every row a
    second time.)"""
    s = snapshots.c
    rows = conn.execute(
        select(
            s.scope,
            s.artifacts_received,
            s.artifacts_completed,
            s.artifacts_failed,
            s.cost_nusd,
            s.e2e_count,
            s.e2e_sum_us,
            s.e2e_sketch,
        ).where(_covered(base_type, cover), s.scope != "")
    ).all()
    position: dict[str, int] = {}
    group = np.fromiter((position.setdefault(r[0], len(position)) for r in rows), np.int64, len(rows))
    values = np.array([r[1:7] for r in rows], dtype=np.int64).reshape(len(rows), 6)
    sums = np.zeros((len(position), 6), dtype=np.int64)
    np.add.at(sums, group, values)
    sketches = merge_encoded_groups([r[7] for r in rows], group, len(position))
    out = []
    for (scope, at), sketch in zip(position.items(), sketches, strict=True):
        received, completed, failed, cost, e2e_count, e2e_sum = (int(v) for v in sums[at])
        p = SnapshotParts(received=received, completed=completed, failed=failed, cost_nusd=cost)
        p.end_to_end = Latency(e2e_count, e2e_sum)
        p.end_to_end.sketch = sketch
        out.append(ScopeTotals(scope, p))
    return out


def aggregated_starts(conn: Connection, period_type: str, start_ms: int, end_ms: int) -> set[int]:
    """Period starts in the range that have a platform row (that is, that were aggregated)."""
    s = snapshots.c
    query = select(s.period_start_ms).where(
        s.period_type == period_type, s.scope == "", s.period_start_ms >= start_ms, s.period_start_ms < end_ms
    )
    return {int(v) for v in conn.scalars(query)}


def _to_row(
    period_type: str, start_ms: int, scope: str, p: SnapshotParts, computed_ms: int
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "period_type": period_type,
        "period_start_ms": start_ms,
        "scope": scope,
        "computed_ms": computed_ms,
        "artifacts_received": p.received,
        "artifacts_completed": p.completed,
        "artifacts_failed": p.failed,
        "e2e_count": p.end_to_end.count,
        "e2e_sum_us": p.end_to_end.sum_us,
        "transcript_confidence_sum_ppb": p.transcript_confidence_sum_ppb,
        "transcript_confidence_count": p.transcript_confidence_count,
        "claim_confidence_sum_ppb": p.claim_confidence_sum_ppb,
        "claim_confidence_count": p.claim_confidence_count,
        "auto_resolved": p.auto_resolved,
        "needs_disambiguation": p.needs_disambiguation,
        "total_claims": p.claims,
        "total_entities": p.entities,
        "total_drafts": p.drafts,
        "cost_nusd": p.cost_nusd,
    }
    blobs: list[bytes] = []
    for key in STAGE_KEYS:
        stage = p.stages[Stage(key)]
        row[f"{key}_completed"] = stage.completed
        row[f"{key}_failed"] = stage.failed
        row[f"{key}_latency_count"] = stage.latency.count
        row[f"{key}_latency_sum_us"] = stage.latency.sum_us
        blobs.append(stage.latency.encoded())
    row["stage_sketches"] = _pack(blobs)
    row["e2e_sketch"] = p.end_to_end.encoded()
    return row


def _pack(blobs: Sequence[bytes]) -> bytes:
    out = bytearray()
    for blob in blobs:
        out += len(blob).to_bytes(4, "little") + blob
    return bytes(out)


def _unpack(data: bytes) -> list[bytes]:
    blobs: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        blobs.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return blobs


def _from_row(m: Mapping[str, Any]) -> SnapshotRow:
    blobs = _unpack(bytes(m["stage_sketches"]))
    p = SnapshotParts(
        received=m["artifacts_received"],
        completed=m["artifacts_completed"],
        failed=m["artifacts_failed"],
        transcript_confidence_sum_ppb=m["transcript_confidence_sum_ppb"],
        transcript_confidence_count=m["transcript_confidence_count"],
        claim_confidence_sum_ppb=m["claim_confidence_sum_ppb"],
        claim_confidence_count=m["claim_confidence_count"],
        auto_resolved=m["auto_resolved"],
        needs_disambiguation=m["needs_disambiguation"],
        claims=m["total_claims"],
        entities=m["total_entities"],
        drafts=m["total_drafts"],
        cost_nusd=m["cost_nusd"],
    )
    for i, key in enumerate(STAGE_KEYS):
        stage = p.stages[Stage(key)]
        stage.completed = m[f"{key}_completed"]
        stage.failed = m[f"{key}_failed"]
        stage.latency = Latency(
            m[f"{key}_latency_count"], m[f"{key}_latency_sum_us"], blobs[i] if i < len(blobs) else None
        )
    p.end_to_end = Latency(m["e2e_count"], m["e2e_sum_us"], bytes(m["e2e_sketch"]) or None)
    return SnapshotRow(m["period_type"], m["period_start_ms"], m["scope"], m["computed_ms"], p)
