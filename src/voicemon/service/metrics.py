"""Snapshot queries (SPEC 7): history, and the range roll-ups (summary, stages, per organization).

Every roll-up is :func:`~voicemon.domain.snapshot.merge_parts` over stored rows: counts and sums add,
sketches merge, and percentiles and rates are computed once, from the merged parts. A range reads the
fewest rows that give its exact answer: fresh day blocks for runs of days, fresh daily rows for whole days
of hours (:func:`~voicemon.domain.periods.plan_cover`), and the rows themselves for the rest.

Every range answer also says what it covers (:mod:`~voicemon.domain.coverage`): the periods newer than
the newest aggregated one (the hour in progress, the hour waiting for its run) are computed live from what
they are built from, in the same read, and merged like stored rows; periods that are neither are listed as
missing, never shown as zeros without a word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.access import READERS, STAFF_ONLY, Principal, aggregate_scope, require_role
from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.coverage import MAX_LIVE_PERIODS, RangePlan, plan_range
from voicemon.domain.periods import MINUTELY, Cover, Period, period_start, plan_cover, units_above
from voicemon.domain.records import SnapshotRow
from voicemon.domain.snapshot import SnapshotParts, merge_parts
from voicemon.domain.snapshot_fields import ORG_BREAKDOWN
from voicemon.domain.snapshot_layout import reads
from voicemon.domain.timeutil import DAY_MS
from voicemon.errors import ValidationError
from voicemon.service.aggregate import (
    Aggregator,
    add_scopes,
    live_parts,
    live_reads,
    merge_by_scope,
    parts_from_events,
)
from voicemon.service.orgs import display_names
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.snapshots import ALL_SCOPES, VersionBook

DEFAULT_RANGE_MS = {Period.HOURLY: DAY_MS, Period.DAILY: 30 * DAY_MS}

_ORG_READS = reads(ORG_BREAKDOWN)


@dataclass(frozen=True, slots=True)
class Range:
    period: Period
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Merged:
    """A range merged into one row. ``computed_ms`` is the newest computation among what was merged (now,
    when a live period is in it; None when nothing was); ``plan`` says what the range covers."""

    range: Range
    organization_id: str | None
    parts: SnapshotParts
    computed_ms: int | None
    plan: RangePlan


@dataclass(frozen=True, slots=True)
class History:
    """The rows of one scope, oldest first (live ones computed now), and what the range covers."""

    rows: list[SnapshotRow]
    live: frozenset[int]
    plan: RangePlan


@dataclass(frozen=True, slots=True)
class OrgItem:
    """An organization's rows merged; ``parts`` holds what the breakdown shows, the rest is empty."""

    organization_id: str
    organization_name: str
    parts: SnapshotParts


@dataclass(frozen=True, slots=True)
class OrgBreakdown:
    items: list[OrgItem]
    plan: RangePlan


class MetricsQueries:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self._db = db
        self._clock = clock
        self._hourly_retention_ms = settings.hourly_retention_ms
        # A live period is computable exactly while the aggregation could still build it.
        self._sources = Aggregator(db, clock, settings)

    def resolve_range(self, period: Period, start_ms: int | None, end_ms: int | None) -> Range:
        """Fill in a missing end (now) and start (a day of hours, or 30 days); refuse an empty range.
        The default range is the last 24 periods of hours (30 of days) that have begun, the one in
        progress included."""
        end = end_ms if end_ms is not None else self._clock.now_ms()
        start = start_ms if start_ms is not None else end - DEFAULT_RANGE_MS[period]
        if start >= end:
            raise ValidationError("must be before end", code="empty_range", field="start")
        return Range(period, start, end)

    def history(self, principal: Principal, r: Range, organization_id: str | None) -> History:
        """Rows of one scope, oldest first: platform-wide rows only when no organization is named. Live
        periods come as rows computed now; an organization's only when it had events in them."""
        require_role(principal, *READERS)
        scope = aggregate_scope(principal, organization_id) or PLATFORM_SCOPE
        now_ms = self._clock.now_ms()
        with self._db.read() as conn:
            plan = self._plan(self._book(conn, r, now_ms), r, now_ms)
            rows = snapshot_store.load_rows(conn, r.period.value, r.start_ms, r.end_ms, scope)
            live = self._live(conn, plan, scope)
        for start, parts in live.items():
            if scope == PLATFORM_SCOPE or any(parts.counts):
                rows.append(SnapshotRow(r.period.value, start, scope, now_ms, parts))
        rows.sort(key=lambda row: row.period_start_ms)
        return History(rows, frozenset(live), plan)

    def summary(self, principal: Principal, r: Range, organization_id: str | None) -> Merged:
        """The range merged into one row: equal to merging every row ``history`` gives. ``computed_ms``
        is the newest of the rows read (a block or a day is computed after the rows it merges)."""
        require_role(principal, *READERS)
        scope = aggregate_scope(principal, organization_id) or PLATFORM_SCOPE
        now_ms = self._clock.now_ms()
        with self._db.read() as conn:
            parts, computed, plan = self._merge(conn, r, scope, now_ms)
        return Merged(r, organization_id, parts, computed, plan)

    def current_hour(self, principal: Principal, organization_id: str | None) -> Merged:
        """The hour in progress, computed on demand from its fresh minute rows and the raw events of the
        rest (the minute in progress). Its range ends now."""
        require_role(principal, *READERS)
        scope = aggregate_scope(principal, organization_id) or PLATFORM_SCOPE
        now_ms = self._clock.now_ms()
        start = period_start(Period.HOURLY, now_ms)
        r = Range(Period.HOURLY, start, now_ms + 1)
        with self._db.read() as conn, conn.begin():
            parts = live_parts(conn, start, now_ms + 1, scope).get(scope, SnapshotParts())
        plan = plan_range(
            Period.HOURLY,
            start,
            now_ms + 1,
            now_ms,
            stored=(),
            stale=(),
            newest_stored_ms=None,
            live_from_ms=start,
        )
        return Merged(r, organization_id, parts, now_ms, plan)

    def by_organization(self, principal: Principal, r: Range) -> OrgBreakdown:
        """One merged item per organization with events in the range: received desc, then id. Only the
        parts the breakdown's fields read (:data:`ORG_BREAKDOWN`) are read from stored rows; live periods
        add what they computed."""
        require_role(principal, *STAFF_ONLY)
        now_ms = self._clock.now_ms()
        with self._db.read() as conn:
            book = self._book(conn, r, now_ms)
            plan = self._plan(book, r, now_ms)
            cover = plan_cover(r.period, r.start_ms, r.end_ms, book.fresh)
            totals = snapshot_store.org_totals(conn, r.period.value, cover, _ORG_READS)
            merged = {t.scope: t.parts for t in totals}
            for live in self._live(conn, plan, ALL_SCOPES).values():
                add_scopes(merged, {s: p for s, p in live.items() if s != PLATFORM_SCOPE})
            names = display_names(conn, merged)
        items = [OrgItem(scope, names[scope], parts) for scope, parts in merged.items()]
        items.sort(key=lambda i: (-i.parts.received, i.organization_id))
        return OrgBreakdown(items, plan)

    # --- the pieces every range answer is made of ------------------------------------------------------

    def _book(self, conn: Connection, r: Range, now_ms: int, *, minutes: bool = False) -> VersionBook:
        """The versions a range answer needs, in one read; with ``minutes``, also the minute rows of the
        hours it may answer live. Those are the newest periods of the range (the live ones always follow
        the newest aggregated one, :func:`~voicemon.domain.coverage.plan_range`), so the last
        :data:`MAX_LIVE_PERIODS` hours bound them."""
        minutes_from = None
        if minutes and r.period is Period.HOURLY:
            last = period_start(Period.HOURLY, min(r.end_ms, now_ms + 1) - 1)
            minutes_from = last - (MAX_LIVE_PERIODS - 1) * Period.HOURLY.length_ms
        return snapshot_store.version_book(
            conn,
            r.period.value,
            r.start_ms,
            r.end_ms,
            cover_types=[u.period_type for u in units_above(r.period)],
            cover_from_ms=cover_from_ms(r, now_ms, self._hourly_retention_ms),
            minutes_from_ms=minutes_from,
        )

    def _plan(self, book: VersionBook, r: Range, now_ms: int) -> RangePlan:
        stored = {s for s, (_, done) in book.versions.items() if done is not None}
        stale = {s for s, (version, done) in book.versions.items() if done is not None and version > done}
        return plan_range(
            r.period,
            r.start_ms,
            r.end_ms,
            now_ms,
            stored=stored,
            stale=stale,
            newest_stored_ms=book.newest_aggregated_ms,
            live_from_ms=self._sources.oldest_start_ms(r.period, now_ms),
        )

    def _live(self, conn: Connection, plan: RangePlan, scope: str | None) -> dict[int, Any]:
        """The parts of each live period of a plan, computed now: for one scope (a ``SnapshotParts`` per
        period), or for every scope (a dict of scope to parts per period) when ``scope`` is ALL_SCOPES.
        An hour is computed from its fresh minute rows and the raw events of its other minutes
        (:func:`~voicemon.service.aggregate.live_parts`); a day as the hourly range of its hours, which
        reads the hours already aggregated and computes the rest live."""
        out: dict[int, Any] = {}
        for start in plan.live:
            end = min(start + plan.period.length_ms, plan.now_ms + 1)
            if plan.period is Period.HOURLY:
                by_scope = live_parts(conn, start, end, scope)
                out[start] = by_scope if scope is ALL_SCOPES else by_scope.get(scope, SnapshotParts())
            elif scope is ALL_SCOPES:
                hours = Range(Period.HOURLY, start, end)
                rows = snapshot_store.load_rows(conn, Period.HOURLY.value, start, end, ALL_SCOPES)
                by_scope = merge_by_scope(rows)
                hours_plan = self._plan(self._book(conn, hours, plan.now_ms), hours, plan.now_ms)
                for live in self._live(conn, hours_plan, ALL_SCOPES).values():
                    add_scopes(by_scope, live)
                out[start] = by_scope
            else:
                out[start] = self._merge(conn, Range(Period.HOURLY, start, end), scope, plan.now_ms)[0]
        return out

    def _merge(
        self, conn: Connection, r: Range, scope: str, now_ms: int
    ) -> tuple[SnapshotParts, int | None, RangePlan]:
        """One scope's range merged, with its plan. An hourly range is three statements however many
        live hours it has: its versions (:meth:`_book`), its stored rows with the fresh minute rows of
        its live hours, and the raw events of the minutes that are not fresh. A daily range computes a
        live day as the hourly range of its hours."""
        book = self._book(conn, r, now_ms, minutes=True)
        plan = self._plan(book, r, now_ms)
        cover = plan_cover(r.period, r.start_ms, r.end_ms, book.fresh)
        if r.period is Period.HOURLY:
            spans = [(start, min(start + r.period.length_ms, now_ms + 1)) for start in plan.live]
            minutes, raw_runs = live_reads(book, spans)
            rows = snapshot_store.load_covers(conn, [(r.period.value, cover), (MINUTELY, minutes)], scope)
            parts = [row.parts for row in rows]
            for run_start, run_end in raw_runs:
                parts.append(parts_from_events(conn, run_start, run_end, scope).get(scope, SnapshotParts()))
        else:
            rows = snapshot_store.load_cover(conn, r.period.value, cover, scope)
            parts = [*(row.parts for row in rows), *self._live(conn, plan, scope).values()]
        computed = now_ms if plan.live else max((row.computed_ms for row in rows), default=None)
        return merge_parts(parts), computed, plan


def cover_from_ms(r: Range, now_ms: int, hourly_retention_ms: int) -> int:
    """The oldest start at which a period above the range's own may stand in for its rows. A daily row
    stands in for its hours only while they are all kept: a day older than hourly retention may have lost
    some of them."""
    if r.period is Period.HOURLY:
        return max(r.start_ms, now_ms - hourly_retention_ms)
    return r.start_ms


def range_cover(conn: Connection, r: Range, now_ms: int, hourly_retention_ms: int) -> Cover:
    """How to read a range in the fewest rows (:func:`cover_from_ms`)."""
    oldest = cover_from_ms(r, now_ms, hourly_retention_ms)
    types = [u.period_type for u in units_above(r.period)]
    fresh = snapshot_store.fresh_periods(conn, types, oldest, r.end_ms)
    return plan_cover(r.period, r.start_ms, r.end_ms, fresh)
