"""Snapshot queries (SPEC 7): history, and the range roll-ups (summary, stages, per organization).

Every roll-up is :func:`~voicemon.domain.snapshot.merge_parts` over stored rows: counts and sums add,
sketches merge, and percentiles and rates are computed once, from the merged parts. A range reads the
fewest rows that give its exact answer: fresh day blocks for runs of days, fresh daily rows for whole days
of hours (:func:`~voicemon.domain.periods.plan_cover`), and the rows themselves for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.access import READERS, STAFF_ONLY, Principal, aggregate_scope, require_role
from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.periods import Cover, Period, period_start, plan_cover, units_above
from voicemon.domain.records import SnapshotRow
from voicemon.domain.snapshot import SnapshotParts, merge_parts
from voicemon.domain.snapshot_fields import ORG_BREAKDOWN
from voicemon.domain.snapshot_layout import reads
from voicemon.domain.timeutil import DAY_MS
from voicemon.errors import ValidationError
from voicemon.service.aggregate import parts_from_events
from voicemon.service.orgs import display_names
from voicemon.storage import Database
from voicemon.storage import snapshots as snapshot_store

DEFAULT_RANGE_MS = {Period.HOURLY: DAY_MS, Period.DAILY: 30 * DAY_MS}

_ORG_READS = reads(ORG_BREAKDOWN)


@dataclass(frozen=True, slots=True)
class Range:
    period: Period
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Merged:
    """A range merged into one row; ``computed_ms`` is the newest of the merged rows (None if none)."""

    range: Range
    organization_id: str | None
    parts: SnapshotParts
    computed_ms: int | None


@dataclass(frozen=True, slots=True)
class OrgItem:
    """An organization's rows merged; ``parts`` holds what the breakdown shows, the rest is empty."""

    organization_id: str
    organization_name: str
    parts: SnapshotParts


class MetricsQueries:
    def __init__(self, db: Database, clock: Clock, hourly_retention_ms: int) -> None:
        self._db = db
        self._clock = clock
        self._hourly_retention_ms = hourly_retention_ms

    def resolve_range(self, period: Period, start_ms: int | None, end_ms: int | None) -> Range:
        """Fill in a missing end (now) and start (a day of hours, or 30 days); refuse an empty range."""
        end = end_ms if end_ms is not None else self._clock.now_ms()
        start = start_ms if start_ms is not None else end - DEFAULT_RANGE_MS[period]
        if start >= end:
            raise ValidationError("must be before end", code="empty_range", field="start")
        return Range(period, start, end)

    def history(self, principal: Principal, r: Range, organization_id: str | None) -> list[SnapshotRow]:
        """Rows of one scope, oldest first: platform-wide rows only when no organization is named."""
        require_role(principal, *READERS)
        scope = aggregate_scope(principal, organization_id) or PLATFORM_SCOPE
        with self._db.read() as conn:
            return snapshot_store.load_rows(conn, r.period.value, r.start_ms, r.end_ms, scope)

    def _cover(self, conn: Connection, r: Range) -> Cover:
        """How to read a range in the fewest rows. A daily row stands in for its hours only while they
        are all kept: a day older than hourly retention may have lost some of them."""
        oldest = r.start_ms
        if r.period is Period.HOURLY:
            oldest = max(oldest, self._clock.now_ms() - self._hourly_retention_ms)
        types = [u.period_type for u in units_above(r.period)]
        fresh = snapshot_store.fresh_periods(conn, types, oldest, r.end_ms)
        return plan_cover(r.period, r.start_ms, r.end_ms, fresh)

    def summary(self, principal: Principal, r: Range, organization_id: str | None) -> Merged:
        """The range merged into one row: equal to merging every row ``history`` gives. ``computed_ms``
        is the newest of the rows read (a block or a day is computed after the rows it merges)."""
        require_role(principal, *READERS)
        scope = aggregate_scope(principal, organization_id) or PLATFORM_SCOPE
        with self._db.read() as conn:
            rows = snapshot_store.load_cover(conn, r.period.value, self._cover(conn, r), scope)
        computed = max((row.computed_ms for row in rows), default=None)
        return Merged(r, organization_id, merge_parts(row.parts for row in rows), computed)

    def current_hour(self, principal: Principal, organization_id: str | None) -> Merged:
        """The hour in progress, computed from raw events on demand (nothing is stored: the hour is not
        complete). Its range ends now."""
        require_role(principal, *READERS)
        scope = aggregate_scope(principal, organization_id) or PLATFORM_SCOPE
        now_ms = self._clock.now_ms()
        start = period_start(Period.HOURLY, now_ms)
        with self._db.read() as conn, conn.begin():
            parts = parts_from_events(conn, start, now_ms + 1).get(scope, SnapshotParts())
        return Merged(Range(Period.HOURLY, start, now_ms), organization_id, parts, now_ms)

    def by_organization(self, principal: Principal, r: Range) -> list[OrgItem]:
        """One merged item per organization with rows in the range: received desc, then id. Only the
        parts the breakdown's fields read (:data:`ORG_BREAKDOWN`) are read and merged; the rest stay
        empty."""
        require_role(principal, *STAFF_ONLY)
        with self._db.read() as conn:
            totals = snapshot_store.org_totals(conn, r.period.value, self._cover(conn, r), _ORG_READS)
            names = display_names(conn, (t.scope for t in totals))
        items = [OrgItem(t.scope, names[t.scope], t.parts) for t in totals]
        items.sort(key=lambda i: (-i.parts.received, i.organization_id))
        return items
