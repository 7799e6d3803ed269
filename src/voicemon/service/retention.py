"""Retention (SPEC 8): delete every expired row, however old, in bounded batches. Cutoffs are strict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.periods import MINUTELY, Period, blocks_of
from voicemon.domain.timeutil import DAY_MS, HOUR_MS
from voicemon.errors import StorageError
from voicemon.service.partitions import EventPartitions
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage.retention import DEPENDENT, delete_expired, delete_orphans

logger = logging.getLogger(__name__)


class Retention:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._partitions = EventPartitions(db, clock, settings)

    def _drain(self, kind: str, cutoff_ms: int, where: dict[str, Any] | None = None) -> int:
        """Delete the rows of ``kind`` aged before ``cutoff_ms``, batch after batch, until none is left."""
        return self._drain_batches(
            lambda conn, batch: delete_expired(conn, kind, cutoff_ms, batch, where=where)
        )

    def _drain_batches(self, delete_batch: Callable[[Connection, int], int]) -> int:
        """Call ``delete_batch`` (which deletes at most the batch size it is given, and says how many),
        each time in its own short transaction, until a batch comes back short."""
        batch = self._settings.cleanup_batch_rows
        total = 0
        while True:
            with self._db.write() as conn:
                deleted = delete_batch(conn, batch)
            total += deleted
            if deleted < batch:
                return total

    def cleanup_snapshots(self) -> dict[str, int]:
        now_ms = self._clock.now_ms()
        s = self._settings
        cutoff = {p: now_ms - s.snapshot_retention_ms(p) for p in Period}
        # A block starting before its rows' cutoff holds expiring rows: it goes first, so that no block
        # ever stands in for rows already deleted. Blocks starting later hold only kept rows.
        blocks_deleted = sum(
            self._drain("snapshots", cutoff[base], {"period_type": t})
            for base in Period
            for t in blocks_of(base)
        )
        summary = {
            f"{base.value}_deleted": self._drain("snapshots", cutoff[base], {"period_type": base.value})
            for base in Period
        }
        summary["blocks_deleted"] = blocks_deleted
        # Version bookkeeping of periods whose rows are gone is dead weight.
        for base in Period:
            for period_type in (base.value, *blocks_of(base)):
                self._drain("period_versions", cutoff[base], {"period_type": period_type})
        logger.info("snapshots cleaned up", extra={"action": "snapshots_cleaned", **summary})
        return summary

    def cleanup_minutes(self, cutoff_ms: int) -> dict[str, int]:
        """Minute rows and their versions before ``cutoff_ms``: past the live window, nothing reads them
        (the minutes job calls this after each run, so they never pile up)."""
        where = {"period_type": MINUTELY}
        return {
            "minute_rows_deleted": self._drain("snapshots", cutoff_ms, where),
            "minute_versions_deleted": self._drain("period_versions", cutoff_ms, where),
        }

    def _expire_events(self, cutoff_ms: int) -> dict[str, int]:
        """Raw events before ``cutoff_ms``: on PostgreSQL each wholly expired day goes by dropping its
        partition, and only the rows before the cutoff in the day it falls in are deleted one by one."""
        try:
            partitions, dropped = self._partitions.drop_expired(cutoff_ms)
        except StorageError:
            # Its locks were not to be had (a long read in the way): the rows go one by one instead,
            # and the emptied partitions at the next run. The other kinds of rows still expire now.
            logger.warning(
                "event partitions not dropped; deleting their rows",
                exc_info=True,
                extra={"action": "partition_drop_skipped"},
            )
            partitions, dropped = 0, 0
        return {
            "events_deleted": dropped + self._drain("events", cutoff_ms),
            "event_partitions_dropped": partitions,
        }

    def cleanup_events(self) -> dict[str, int]:
        now_ms = self._clock.now_ms()
        s = self._settings
        summary = {
            **self._expire_events(now_ms - s.event_retention_ms),
            "minute_counters_deleted": self._drain(
                "minute_counters", now_ms - s.counter_retention_h * HOUR_MS
            ),
            "artifacts_deleted": self._drain("artifacts", now_ms - s.artifact_retention_d * DAY_MS),
            "job_runs_deleted": self._drain("job_runs", now_ms - s.job_run_retention_d * DAY_MS),
            # Settled deliveries only, by when they settled: an entry still owed is kept.
            "outbox_deleted": self._drain("outbox", now_ms - s.outbox_retention_d * DAY_MS),
            # Resolved alerts only, by when they resolved.
            "alerts_deleted": self._drain("alerts", now_ms - s.alert_retention_d * DAY_MS),
        }
        # Then what lives exactly as long as a row just deleted (retry history, alert history, ...).
        for kind, (child, parent, link) in DEPENDENT.items():
            summary[f"{kind}_deleted"] = self._drain_batches(
                partial(delete_orphans, child=child, parent=parent, link=link)
            )
        logger.info("events cleaned up", extra={"action": "events_cleaned", **summary})
        return summary
