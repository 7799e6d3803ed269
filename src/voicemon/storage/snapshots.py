"""Snapshot rows and the late-data versions of periods; the raw-event reads an hourly aggregation needs."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    BigInteger,
    Connection,
    String,
    and_,
    case,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
)

from voicemon.domain.aggregation import TypeGroup
from voicemon.domain.model import EventType
from voicemon.domain.periods import MINUTELY, Cover, Period
from voicemon.domain.records import SnapshotRow
from voicemon.domain.sketch import merge_encoded_groups
from voicemon.domain.snapshot import Latency, SnapshotParts, from_columns, to_columns, unpack_sketches
from voicemon.domain.snapshot_fields import Measure
from voicemon.domain.snapshot_layout import SAMPLED_TYPES, Reads
from voicemon.storage.dialect import concat_integers, integers_of, send_many, upsert_add_sql, upsert_replace
from voicemon.storage.tables import artifacts, events, period_versions, snapshots

# --- raw events of one period ---------------------------------------------------------------------------


# Which scopes a raw-event read computes: every scope (:data:`ALL_SCOPES`), or one ("" = platform).
ALL_SCOPES = None


def _scoped(query: Any, scope: str | None) -> Any:
    """Group a raw-event query by organization for every scope, or restrict it to one. The platform
    scope needs no per-organization groups; an organization's needs only its own events."""
    e = events.c
    if scope is ALL_SCOPES:
        return query.group_by(e.organization_id)
    if scope != "":
        query = query.where(e.organization_id == scope)
    return query


def _org_column(scope: str | None) -> Any:
    return events.c.organization_id if scope is ALL_SCOPES else literal(scope or None, String)


def raw_groups(
    conn: Connection,
    start_ms: int,
    end_ms: int,
    scope: str | None = ALL_SCOPES,
    *,
    samples: bool = True,
) -> tuple[list[TypeGroup], list[tuple[str | None, NDArray[np.int64]]]]:
    """One statement over the raw events of ``[start_ms, end_ms)``, for every scope or for one:

    - per (organization, event type), every measure and the durations of the latency samples, as one
      string per group (the type groups);
    - per organization, completed minus received (µs) of each artifact completion, as one string (the
      end-to-end samples).

    The two reads travel as one UNION ALL; the end-to-end rows are the ones without an event type.
    ``samples=False`` reads the measures alone: no durations and no end-to-end samples, so no latency
    (what counts and rates need, at the price of a plain GROUP BY)."""
    e = events.c
    a = artifacts.c
    durations = case((e.event_type.in_(SAMPLED_TYPE_NAMES), e.duration_us), else_=None)
    sampled = concat_integers(conn, durations) if samples else literal(None, String)
    groups = select(_org_column(scope), e.event_type, *_MEASURES.values(), sampled)
    groups = _scoped(groups.where(e.ts_ms >= start_ms, e.ts_ms < end_ms), scope).group_by(e.event_type)
    if not samples:
        found = conn.execute(groups)
        return [
            TypeGroup(
                org, EventType(t), dict(zip(_MEASURES, map(int, totals), strict=True)), integers_of(None)
            )
            for org, t, *totals, _ in found
        ], []
    no_measures = [literal(0, BigInteger) for _ in _MEASURES]
    end_to_end = (
        select(
            _org_column(scope),
            literal(None, String),
            *no_measures,
            concat_integers(conn, (e.ts_ms - a.received_at_ms) * 1000),
        )
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
    )
    out: list[TypeGroup] = []
    e2e: list[tuple[str | None, NDArray[np.int64]]] = []
    for org, event_type, *totals, values in conn.execute(union_all(groups, _scoped(end_to_end, scope))):
        if event_type is None:
            if values is not None:
                e2e.append((org, integers_of(values)))
            continue
        measures = dict(zip(_MEASURES, map(int, totals), strict=True))
        out.append(TypeGroup(org, EventType(event_type), measures, integers_of(values)))
    return out, e2e


# How each measure of a type group is computed from the events' columns.
_MEASURES: dict[Measure, Any] = {
    Measure.EVENTS: func.count(),
    Measure.COST_NUSD: func.coalesce(func.sum(events.c.cost_nusd), 0),
    Measure.CONFIDENCE_SUM_PPB: func.coalesce(func.sum(events.c.confidence_ppb), 0),
    Measure.CONFIDENCE_COUNT: func.count(events.c.confidence_ppb),
    Measure.CLAIMS: func.coalesce(func.sum(events.c.claim_count), 0),
    Measure.ENTITIES: func.coalesce(func.sum(events.c.entity_count), 0),
    Measure.DRAFTS: func.coalesce(func.sum(events.c.draft_count), 0),
}
SAMPLED_TYPE_NAMES = sorted(t.value for t in SAMPLED_TYPES)


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


@dataclass(frozen=True, slots=True)
class VersionBook:
    """What one range answer needs to know about period versions, read in one statement: the
    (version, aggregated_version) of the range's own periods, the newest period of its type ever
    aggregated, the fresh periods of the types that can stand in for its rows, and the minute version
    rows of the hours that may be answered live."""

    versions: dict[int, tuple[int, int | None]]
    newest_aggregated_ms: int | None
    fresh: set[tuple[str, int]]
    minutes: dict[int, tuple[int, int | None]]

    def minutes_of(self, hour_ms: int) -> dict[int, tuple[int, int | None]]:
        end = hour_ms + Period.HOURLY.length_ms
        return {s: v for s, v in self.minutes.items() if hour_ms <= s < end}


# The type column of the one row of a version book that carries the newest aggregated start.
_NEWEST = "~newest"


def version_book(
    conn: Connection,
    period_type: str,
    start_ms: int,
    end_ms: int,
    *,
    cover_types: Sequence[str],
    cover_from_ms: int,
    minutes_from_ms: int | None,
) -> VersionBook:
    """Read a :class:`VersionBook` in one statement: the periods of ``period_type`` starting in
    ``[start_ms, end_ms)``, the fresh periods of ``cover_types`` starting in ``[cover_from_ms, end_ms)``,
    the minute rows starting in ``[minutes_from_ms, end_ms)`` (none when None), and the newest aggregated
    start of ``period_type``."""
    v = period_versions.c
    wanted = [
        and_(v.period_type == period_type, v.period_start_ms >= start_ms, v.period_start_ms < end_ms),
        and_(
            v.period_type.in_(cover_types),
            v.period_start_ms >= cover_from_ms,
            v.period_start_ms < end_ms,
            v.aggregated_version == v.version,
        ),
    ]
    if minutes_from_ms is not None:
        wanted.append(
            and_(v.period_type == MINUTELY, v.period_start_ms >= minutes_from_ms, v.period_start_ms < end_ms)
        )
    rows = select(v.period_type, v.period_start_ms, v.version, v.aggregated_version).where(or_(*wanted))
    newest = select(
        literal(_NEWEST, String),
        func.max(v.period_start_ms),
        literal(0, BigInteger),
        literal(None, BigInteger),
    ).where(v.period_type == period_type, v.aggregated_version.is_not(None))
    book = VersionBook({}, None, set(), {})
    newest_ms: int | None = None
    for kind, start, version, done in conn.execute(union_all(rows, newest)):
        if kind == _NEWEST:
            newest_ms = None if start is None else int(start)
        elif kind == period_type:
            book.versions[int(start)] = (int(version), None if done is None else int(done))
        elif kind == MINUTELY:
            book.minutes[int(start)] = (int(version), None if done is None else int(done))
        else:
            book.fresh.add((kind, int(start)))
    return VersionBook(book.versions, newest_ms, book.fresh, book.minutes)


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
    return load_covers(conn, [(base_type, cover)], scope)


def load_covers(
    conn: Connection, covers: Sequence[tuple[str, Cover]], scope: str | None
) -> list[SnapshotRow]:
    """The rows of several covers (base type, cover) in one statement: a range's stored rows with the
    minute rows of its live hours."""
    s = snapshots.c
    where = or_(*(_covered(base_type, cover) for base_type, cover in covers))
    if scope is not ALL_SCOPES:
        where = and_(where, s.scope == scope)
    query = select(snapshots).where(where).order_by(s.period_start_ms, s.scope)
    return [_from_row(r._mapping) for r in conn.execute(query)]


@dataclass(frozen=True, slots=True)
class ScopeTotals:
    """One scope's rows over a range, merged: only the parts that were asked for are filled in."""

    scope: str
    parts: SnapshotParts


def org_totals(
    conn: Connection,
    base_type: str,
    cover: Cover,
    wanted: Reads,
    *,
    with_platform: bool = False,
    scopes: Collection[str] | None = None,
) -> list[ScopeTotals]:
    """Per organization (and the platform scope, when asked) over a cover, the ``wanted`` parts of its
    rows merged (the others stay empty), in one read of only their columns: integers added as exact int64
    arrays, each latency's sketches merged in one pass. (A GROUP BY for the sums would read every row a
    second time.) ``scopes``: only these."""
    s = snapshots.c
    integers, sketches = wanted.integer_columns, wanted.sketch_columns
    where = _covered(base_type, cover)
    if not with_platform:
        where = and_(where, s.scope != "")
    if scopes is not None:
        where = and_(where, s.scope.in_(sorted(scopes)))
    rows = conn.execute(
        select(s.scope, *(s[c] for c in integers), *(s[c] for c in sketches)).where(where)
    ).all()
    position: dict[str, int] = {}
    group = np.fromiter((position.setdefault(r[0], len(position)) for r in rows), np.int64, len(rows))
    width = len(integers)
    values = np.array([r[1 : 1 + width] for r in rows], dtype=np.int64).reshape(len(rows), width)
    sums = np.zeros((len(position), width), dtype=np.int64)
    np.add.at(sums, group, values)
    merged = []
    for slot in wanted.latencies:
        at = 1 + width + sketches.index(slot.sketch_column)
        blobs = [_sketch_of(r[at], slot.packed_at) for r in rows]
        merged.append(merge_encoded_groups(blobs, group, len(position)))
    n_counts = len(wanted.counts)
    out = []
    for scope, at in position.items():
        totals = [int(v) for v in sums[at]]
        p = SnapshotParts()
        for count_slot, value in zip(wanted.counts, totals[:n_counts], strict=True):
            p.counts[count_slot.index] = value
        for k, slot in enumerate(wanted.latencies):
            count, sum_us = totals[n_counts + 2 * k : n_counts + 2 * k + 2]
            p.latencies[slot.index] = latency = Latency(count, sum_us)
            latency.sketch = merged[k][at]
        out.append(ScopeTotals(scope, p))
    return out


def _sketch_of(value: bytes | None, packed_at: int | None) -> bytes | None:
    if packed_at is None or not value:
        return value
    blobs = unpack_sketches(bytes(value))
    return blobs[packed_at] if packed_at < len(blobs) else None


def newest_aggregated(conn: Connection, period_type: str) -> int | None:
    """The start of the newest period of a type that was ever aggregated, or None."""
    v = period_versions.c
    query = select(func.max(v.period_start_ms)).where(
        v.period_type == period_type, v.aggregated_version.is_not(None)
    )
    found = conn.scalar(query)
    return None if found is None else int(found)


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
    }
    row.update(to_columns(p))
    return row


def _from_row(m: Mapping[Any, Any]) -> SnapshotRow:
    return SnapshotRow(m["period_type"], m["period_start_ms"], m["scope"], m["computed_ms"], from_columns(m))
