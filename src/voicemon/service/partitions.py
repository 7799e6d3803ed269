"""Daily partitions of raw events on PostgreSQL (SPEC 19): the ``partition-events`` job creates them
ahead of time, and retention drops the ones that have wholly expired. On SQLite, one table: nothing to do.

Each partition is created or dropped in its own short transaction (see :mod:`voicemon.storage.partitions`
for the locks it takes, and why it waits for them briefly and tries again rather than long).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain import partitions as plan
from voicemon.domain.timeutil import DAY_MS, format_time
from voicemon.errors import StorageError
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import partitions as store

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A change whose locks are not to be had is tried this many times, pausing 2, 4, 6 ... seconds between.
LOCK_ATTEMPTS = 5
LOCK_PAUSE_S = 2.0


class EventPartitions:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings

    def _partitioned(self) -> bool:
        if self._db.is_sqlite:
            return False
        with self._db.read() as conn:
            return store.is_partitioned(conn)

    def ensure(self) -> dict[str, object]:
        """Create the partition of every day an event may be stored in, from the oldest day retention
        keeps to ``event_partitions_ahead_d`` days ahead; rows that had landed in the default partition
        move into their day's."""
        if not self._partitioned():
            return {"partitioned": False}
        s = self._settings
        days = plan.days_needed(self._clock.now_ms(), s.event_retention_ms, s.event_partitions_ahead_d)
        with self._db.read() as conn:
            todo = plan.missing(days, store.list_partitions(conn))
        moved, created = 0, []
        for day in todo:
            took = self._change(partial(store.create_partition, day_ms=day, end_ms=day + DAY_MS))
            if took is not None:  # None: another process made it meanwhile
                created.append(day)
                moved += took
        with self._db.read() as conn:
            existing = store.list_partitions(conn)
        summary: dict[str, object] = {
            "partitioned": True,
            "partitions_created": [format_time(d) for d in created],
            "rows_moved": moved,
            "partitions": len(existing),
            "newest_partition": format_time(existing[-1].start_ms) if existing else None,
        }
        logger.info("event partitions ensured", extra={"action": "partitions_ensured", **summary})
        return summary

    def drop_expired(self, cutoff_ms: int) -> tuple[int, int]:
        """Drop every partition whose rows are all older than ``cutoff_ms``; returns how many partitions
        went and how many events they held (0, 0 on SQLite)."""
        if not self._partitioned():
            return 0, 0
        with self._db.read() as conn:
            doomed = plan.expired(store.list_partitions(conn), cutoff_ms)
        rows = 0
        for partition in doomed:
            rows += self._change(partial(store.drop_partition, partition=partition))
        return len(doomed), rows

    def _change(self, change: Callable[[Connection], T]) -> T:
        """One partition change in a transaction of its own, tried again after a pause when its locks
        were not to be had within the lock timeout (a long read in the way); the last failure is
        raised, and the job's next run catches up."""
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                with self._db.write() as conn:
                    return change(conn)
            except StorageError:
                if attempt == LOCK_ATTEMPTS:
                    raise
                logger.warning(
                    "partition change waits for its locks",
                    extra={"action": "partition_lock_wait", "attempt": attempt},
                )
                time.sleep(LOCK_PAUSE_S * attempt)
        raise AssertionError("unreachable")
