"""Retention of raw events on PostgreSQL (SPEC 19): a day of expired events goes by dropping its
partition, against deleting the same rows in batches (what retention does where there are no
partitions, and in the one day the cutoff falls in)."""

from __future__ import annotations

import time

from bench.common import Row, Sizes, services_for
from bench.dbs import fresh_database
from bench.workload import fill_events_sql
from voicemon.clock import SystemClock
from voicemon.domain.partitions import day_of
from voicemon.domain.timeutil import DAY_MS
from voicemon.service.retention import Retention
from voicemon.storage import partitions as partition_store


def bench_retention_drop(backend: str, sizes: Sizes) -> list[Row]:
    """``sizes.retention_events`` events in one day, ten days old: the time to expire them by dropping
    the day's partition (the retention path on PostgreSQL), against the batched DELETE of the same rows
    (``cleanup_batch_rows`` per transaction) from the same partition."""
    if backend == "sqlite":
        return []  # one table: SQLite deletes rows
    count = sizes.retention_events
    day = day_of(SystemClock().now_ms()) - 10 * DAY_MS
    with fresh_database(backend) as url:
        svc = services_for(url)
        retention = Retention(svc.db, svc.clock, svc.settings)

        def fill() -> None:
            with svc.db.write() as conn:
                partition_store.create_partition(conn, day, day + DAY_MS)
            with svc.db.write() as conn:
                fill_events_sql(conn, count, day, DAY_MS - 1, postgres=True)
            with svc.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE events")

        fill()
        t = time.perf_counter()
        deleted = retention._drain("events", day + DAY_MS)
        delete_s = time.perf_counter() - t
        assert deleted == count, deleted
        retention._expire_events(day + DAY_MS)  # the emptied partition goes; refill it
        fill()
        t = time.perf_counter()
        summary = retention._expire_events(day + DAY_MS)
        drop_s = time.perf_counter() - t
        assert summary == {"events_deleted": count, "event_partitions_dropped": 1}, summary
        svc.stop()
    return [
        Row(
            "retention_drop",
            drop_s * 1000,
            f"ms to expire a day of {count:,} events (partition dropped)",
            "batched DELETE of the same rows, ms",
            delete_s * 1000,
            drop_s / delete_s,
            "ratio <= 0.1",
            drop_s / delete_s <= 0.1,
        )
    ]
