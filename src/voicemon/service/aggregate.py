"""Aggregation use cases (SPEC 6.3): one hour, one day, and the catch-up runs the jobs perform.

An hour is read in one read transaction (its version first, then its events) and written in one write
transaction that replaces every row of that hour. Reading the version before the events makes late data
safe without locks: an event committed after the read bumps the version past the one recorded, so the
next run redoes the hour.

The same rule runs up the tree of stored periods. Writing an hour marks its day; writing a day marks the
ended day blocks that hold it (:mod:`voicemon.domain.periods`). A day or a block is rebuilt from its
children when marked, and a range query lets it stand in for its children only while it is unmarked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.aggregation import build_parts
from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.coverage import MAX_LIVE_PERIODS
from voicemon.domain.periods import (
    BLOCK,
    BLOCK_TYPES,
    MINUTELY,
    Cover,
    Period,
    blocks_of,
    ceil_to,
    complete_blocks,
    complete_periods,
    is_complete,
    needs_aggregation,
    period_start,
    plan_cover,
    plan_minutes,
)
from voicemon.domain.records import SnapshotRow
from voicemon.domain.snapshot import SnapshotParts, merge_parts
from voicemon.domain.timeutil import MINUTE_MS, format_time
from voicemon.errors import ConflictError, ValidationError
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.snapshots import ALL_SCOPES

logger = logging.getLogger(__name__)


def parts_from_events(
    conn: Connection, start_ms: int, end_ms: int, scope: str | None = ALL_SCOPES, *, samples: bool = True
) -> dict[str, SnapshotParts]:
    """Snapshot parts of every scope (or of one ``scope``, "" = platform), straight from the raw events
    of ``[start_ms, end_ms)``: SQL counts and sums in one statement, sketches from the streamed durations
    (``samples=False``: counts and sums only, the latencies left empty)."""
    return build_parts(*snapshot_store.raw_groups(conn, start_ms, end_ms, scope, samples=samples))


def live_reads(
    book: snapshot_store.VersionBook, spans: Sequence[tuple[int, int]]
) -> tuple[Cover, tuple[tuple[int, int], ...]]:
    """How to read live ``spans`` (each inside one hour that is not aggregated; ``book`` holds those hours'
    versions and their minute rows): the fresh minute rows to load (a cover of minute runs) and the runs to
    read from raw events (:func:`~voicemon.domain.periods.plan_minutes`; in steady state, the minute in
    progress)."""
    minute_runs: list[tuple[int, int]] = []
    raw_runs: list[tuple[int, int]] = []
    for start_ms, end_ms in spans:
        hour = period_start(Period.HOURLY, start_ms)
        hour_version = book.versions.get(hour, (0, None))[0]
        plan = plan_minutes(start_ms, end_ms, hour_version, book.minutes_of(hour))
        minute_runs += plan.minute_runs
        raw_runs += plan.raw_runs
    return Cover((), tuple(minute_runs)), tuple(raw_runs)


def live_parts(conn: Connection, start_ms: int, end_ms: int, scope: str | None) -> dict[str, SnapshotParts]:
    """The same as :func:`parts_from_events` for ``[start_ms, end_ms)`` inside one hour that is not
    aggregated, read from the fresh minute rows of that range plus the raw events of the minutes that are
    not fresh (:func:`live_reads`): three statements in steady state."""
    hour = period_start(Period.HOURLY, start_ms)
    end = hour + Period.HOURLY.length_ms
    book = snapshot_store.version_book(
        conn, Period.HOURLY.value, hour, end, cover_types=(), cover_from_ms=hour, minutes_from_ms=hour
    )
    minutes, raw_runs = live_reads(book, [(start_ms, end_ms)])
    by_scope = merge_by_scope(snapshot_store.load_cover(conn, MINUTELY, minutes, scope))
    for run_start, run_end in raw_runs:
        add_scopes(by_scope, parts_from_events(conn, run_start, run_end, scope))
    return by_scope


def add_scopes(into: dict[str, SnapshotParts], by_scope: dict[str, SnapshotParts]) -> None:
    """Merge each scope's parts into that scope's entry of ``into``."""
    for scope, parts in by_scope.items():
        into.setdefault(scope, SnapshotParts()).merge(parts)


def merge_by_scope(rows: list[SnapshotRow]) -> dict[str, SnapshotParts]:
    """One merged row per scope of ``rows``; the platform scope always has one."""
    by_scope: dict[str, list[SnapshotParts]] = {PLATFORM_SCOPE: []}
    for row in rows:
        by_scope.setdefault(row.scope, []).append(row.parts)
    return {scope: merge_parts(group) for scope, group in by_scope.items()}


def write_period(
    conn: Connection,
    period: Period,
    start_ms: int,
    parts: dict[str, SnapshotParts],
    now_ms: int,
    read_version: int,
) -> None:
    """Replace the rows of one hour or day, and mark what merges them, in the caller's transaction: for an
    hour, its day and the ended hour blocks holding it; for a day, the ended day blocks holding it. So no
    day or block ever looks fresh while it lacks the new rows. Version rows are taken in one sorted order
    (the day's first, as ingestion takes it)."""
    marks = dict.fromkeys(complete_blocks(period, start_ms, now_ms), 1)
    if period is Period.HOURLY:
        marks[(Period.DAILY.value, period_start(Period.DAILY, start_ms))] = 1
    snapshot_store.bump_versions(conn, marks)
    snapshot_store.replace_period(conn, period.value, start_ms, parts, now_ms, read_version)


class Aggregator:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings

    def source_retention_ms(self, period: Period) -> int:
        """How far back the rows a period is built from are kept: raw events for an hour, hourly rows
        for a day."""
        s = self._settings
        return s.event_retention_ms if period is Period.HOURLY else s.hourly_retention_ms

    def oldest_start_ms(self, period: Period, now_ms: int) -> int:
        """The start of the oldest period that can be built now: the first whole period whose source
        rows are all still kept. Hand runs, catch-up and a day's redo of its hours share this bound."""
        return ceil_to(now_ms - self.source_retention_ms(period), period.length_ms)

    def ensure_target(self, period: Period, start_ms: int, now_ms: int) -> None:
        """Refuse a period that cannot be built correctly now: ``period_incomplete`` (409) while its end
        has not passed, ``too_old`` (422, field ``target``) once what it is built from is no longer all
        kept. Rebuilding such a period would replace good rows with the remains of expired data."""
        if not is_complete(period, start_ms, now_ms):
            raise ConflictError(
                f"the {period.value} period starting {format_time(start_ms)} is not complete yet",
                code="period_incomplete",
            )
        oldest_ms = self.oldest_start_ms(period, now_ms)
        if start_ms < oldest_ms:
            source = "raw events" if period is Period.HOURLY else "hourly snapshots"
            raise ValidationError(
                f"the {period.value} period starting {format_time(start_ms)} is older than the {source} "
                f"it is built from (the oldest it can rebuild starts {format_time(oldest_ms)})",
                code="too_old",
                field="target",
            )

    def aggregate_hour(self, start_ms: int) -> int:
        """Write every row of the hour that starts at ``start_ms``; returns how many rows."""
        start_ms = period_start(Period.HOURLY, start_ms)
        now_ms = self._clock.now_ms()
        self.ensure_target(Period.HOURLY, start_ms, now_ms)
        end_ms = start_ms + Period.HOURLY.length_ms
        with self._db.read() as conn, conn.begin():
            read_version = snapshot_store.version_of(conn, Period.HOURLY.value, start_ms)
            parts = parts_from_events(conn, start_ms, end_ms)
        with self._db.write() as conn:
            write_period(conn, Period.HOURLY, start_ms, parts, now_ms, read_version)
        logger.info(
            "hour aggregated",
            extra={"action": "hour_aggregated", "period_start": format_time(start_ms), "rows": len(parts)},
        )
        return len(parts)

    def aggregate_day(self, start_ms: int, *, blocks: bool = True) -> dict[str, Any]:
        """Roll the day's hourly rows up into its daily rows, first redoing any of its hours that are
        missing or marked while their raw events are still kept; then rebuild the day blocks this marked
        (``blocks=False`` leaves them to the caller, which rolls up several days)."""
        start_ms = period_start(Period.DAILY, start_ms)
        now_ms = self._clock.now_ms()
        self.ensure_target(Period.DAILY, start_ms, now_ms)
        end_ms = start_ms + Period.DAILY.length_ms
        raw_from = self.oldest_start_ms(Period.HOURLY, now_ms)
        hours = [h for h in self._hours_needing_work(start_ms, end_ms, now_ms) if h >= raw_from]
        for hour in hours:
            self.aggregate_hour(hour)
        with self._db.read() as conn, conn.begin():
            read_version = snapshot_store.version_of(conn, Period.DAILY.value, start_ms)
            rows = snapshot_store.load_rows(conn, Period.HOURLY.value, start_ms, end_ms, ALL_SCOPES)
        parts = merge_by_scope(rows)
        with self._db.write() as conn:
            write_period(conn, Period.DAILY, start_ms, parts, now_ms, read_version)
        logger.info(
            "day rolled up",
            extra={"action": "day_rolled_up", "period_start": format_time(start_ms), "rows": len(parts)},
        )
        summary: dict[str, Any] = {
            "rows": len(parts),
            "hours_redone": len(hours),
            "hourly_rows_merged": len(rows),
        }
        if blocks:
            summary["blocks_rebuilt"] = self.rebuild_blocks()
        return summary

    def minutes_catch_up(self) -> dict[str, Any]:
        """Store the rows of every ended minute of the live window (the hours that may be answered live)
        that received events and was never computed, or was marked since. Each minute is read (its
        version first, then its events) and written like an hour; nothing merges minute rows, so
        nothing else is marked."""
        now_ms = self._clock.now_ms()
        oldest = self.oldest_minute_ms(now_ms)
        with self._db.read() as conn, conn.begin():
            newest_hour = snapshot_store.newest_aggregated(conn, Period.HOURLY.value)
            # An hour no newer than the newest aggregated one is never answered live.
            if newest_hour is not None:
                oldest = max(oldest, newest_hour + Period.HOURLY.length_ms)
            todo = sorted(s for _, s in snapshot_store.stale_periods(conn, (MINUTELY,), oldest))
        todo = [m for m in todo if m + MINUTE_MS <= now_ms]
        for minute in todo:
            with self._db.read() as conn, conn.begin():
                read_version = snapshot_store.version_of(conn, MINUTELY, minute)
                parts = parts_from_events(conn, minute, minute + MINUTE_MS)
            with self._db.write() as conn:
                snapshot_store.replace_period(conn, MINUTELY, minute, parts, now_ms, read_version)
        return {"minutes_computed": len(todo), "from": format_time(oldest)}

    @staticmethod
    def oldest_minute_ms(now_ms: int) -> int:
        """The start of the oldest hour that may still be answered live: at most the
        :data:`~voicemon.domain.coverage.MAX_LIVE_PERIODS` newest hours are, so minute rows and versions
        older than this are never read."""
        return period_start(Period.HOURLY, now_ms) - (MAX_LIVE_PERIODS - 1) * Period.HOURLY.length_ms

    def rebuild_blocks(self) -> int:
        """Rebuild every marked or never-built block inside the retention of its rows, smallest first, so
        each block merges the fresh blocks just below it (two rows per scope) instead of its rows."""
        now_ms = self._clock.now_ms()
        oldest = {p: now_ms - self._settings.snapshot_retention_ms(p) for p in Period}
        with self._db.read() as conn:
            stale = snapshot_store.stale_periods(conn, BLOCK_TYPES, min(oldest.values()))
        todo = sorted(
            ((BLOCK[t].length_ms, start, t) for t, start in stale if start >= oldest[BLOCK[t].base]),
        )
        for _, start_ms, period_type in todo:
            self._build_block(period_type, start_ms, now_ms)
        return len(todo)

    def _build_block(self, period_type: str, start_ms: int, now_ms: int) -> None:
        block = BLOCK[period_type]
        end_ms = start_ms + block.length_ms
        with self._db.read() as conn, conn.begin():
            read_version = snapshot_store.version_of(conn, period_type, start_ms)
            fresh = snapshot_store.fresh_periods(conn, blocks_of(block.base), start_ms, end_ms)
            cover = plan_cover(block.base, start_ms, end_ms, fresh)
            rows = snapshot_store.load_cover(conn, block.base.value, cover, ALL_SCOPES)
        parts = merge_by_scope(rows)
        with self._db.write() as conn:
            snapshot_store.replace_period(conn, period_type, start_ms, parts, now_ms, read_version)

    def _hours_needing_work(self, first_ms: int, end_ms: int, now_ms: int) -> list[int]:
        starts = [
            h
            for h in range(first_ms, end_ms, Period.HOURLY.length_ms)
            if is_complete(Period.HOURLY, h, now_ms)
        ]
        return self._todo(Period.HOURLY, starts)

    def _todo(self, period: Period, starts: list[int]) -> list[int]:
        if not starts:
            return []
        first, end = starts[0], starts[-1] + period.length_ms
        with self._db.read() as conn:
            done = snapshot_store.aggregated_starts(conn, period.value, first, end)
            versions = snapshot_store.versions(conn, period.value, first, end)
        return needs_aggregation(starts, done, versions)

    def hourly_catch_up(self) -> dict[str, Any]:
        """Aggregate every complete hour inside raw retention never aggregated or marked since."""
        now_ms = self._clock.now_ms()
        starts = complete_periods(Period.HOURLY, self.oldest_start_ms(Period.HOURLY, now_ms), now_ms)
        todo = self._todo(Period.HOURLY, starts)
        for hour in todo:
            self.aggregate_hour(hour)
        days = self.redo_days_of(todo, now_ms)
        return {
            "aggregated": [format_time(h) for h in todo],
            "checked": len(starts),
            "days_redone": [format_time(d) for d in days],
            "blocks_rebuilt": self.rebuild_blocks(),
        }

    def redo_days_of(self, hours: list[int], now_ms: int) -> list[int]:
        """Roll up again every complete day, inside hourly retention, of the hours just redone, so that a
        late event reaches the daily row in the same run as its hour (SPEC 6.3): hourly and daily answers
        never disagree for longer than one hourly run. The day in progress is rolled up by the daily job
        once it is complete."""
        oldest = self.oldest_start_ms(Period.DAILY, now_ms)
        days = sorted({period_start(Period.DAILY, h) for h in hours})
        days = [d for d in days if d >= oldest and is_complete(Period.DAILY, d, now_ms)]
        for day in days:
            self.aggregate_day(day, blocks=False)
        return days

    def daily_catch_up(self) -> dict[str, Any]:
        """Roll up every complete day inside hourly retention never rolled up or marked since."""
        now_ms = self._clock.now_ms()
        starts = complete_periods(Period.DAILY, self.oldest_start_ms(Period.DAILY, now_ms), now_ms)
        todo = self._todo(Period.DAILY, starts)
        hours_redone = 0
        for day in todo:
            hours_redone += self.aggregate_day(day, blocks=False)["hours_redone"]
        return {
            "aggregated": [format_time(d) for d in todo],
            "checked": len(starts),
            "hours_redone": hours_redone,
            "blocks_rebuilt": self.rebuild_blocks(),
        }
