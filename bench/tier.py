"""The largest design tier (docs/scaling.md): one day of ``sizes.tier_events`` realistic events (250 000
in a full run). How much disk it takes, how long its aggregation takes (its 24 hours, then the day's
roll-up), and how long expiring it takes (its partition dropped on PostgreSQL, its rows deleted in
batches on SQLite)."""

from __future__ import annotations

import time

from sqlalchemy import text

from bench.common import Row, Sizes, fill_raw, services_for
from bench.dbs import fresh_database
from bench.workload import events
from voicemon.clock import FakeClock, SystemClock
from voicemon.domain.partitions import day_of
from voicemon.domain.timeutil import DAY_MS, HOUR_MS
from voicemon.service.aggregate import Aggregator
from voicemon.service.retention import Retention

EVENT_BYTES = (
    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'events'::regclass"
)


def bench_design_tier(backend: str, sizes: Sizes) -> list[Row]:
    count = sizes.tier_events
    now = day_of(SystemClock().now_ms()) + 2 * HOUR_MS
    day = now - 2 * DAY_MS - 2 * HOUR_MS  # the day before yesterday: complete, inside retention
    clock = FakeClock(now)
    with fresh_database(backend) as url:
        svc = services_for(url, clock)
        items = events(count, day, DAY_MS - HOUR_MS, seed=41, orgs=100)
        fill_raw(svc, items, now)
        stored = len(items)
        if backend == "sqlite":
            with svc.db.read() as conn:  # the database's pages as this connection sees them (log included)
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                whole = int(pages) * int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
            events_only = None
        else:
            with svc.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
                events_only = int(conn.execute(text(EVENT_BYTES)).scalar_one())
                whole = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        agg = Aggregator(svc.db, clock, svc.settings)
        t = time.perf_counter()
        for hour in range(24):
            agg.aggregate_hour(day + hour * HOUR_MS)
        agg.aggregate_day(day)
        aggregate_s = time.perf_counter() - t
        retention = Retention(svc.db, clock, svc.settings)
        t = time.perf_counter()
        expired = retention._expire_events(day + DAY_MS)
        expire_s = time.perf_counter() - t
        assert expired["events_deleted"] == stored, (expired, stored)
        svc.stop()
    per_event = whole / stored
    how = "partition dropped" if backend != "sqlite" else "batched DELETE"
    detail = f", events and indexes {events_only / stored:.0f} B/event" if events_only else ""
    return [
        Row(
            "tier_day_disk",
            whole / 2**20,
            f"MiB for a day of {stored:,} events ({per_event:.0f} B/event whole db{detail})",
            None,
            None,
            None,
            "<= 500 MiB",
            whole / 2**20 <= 500,
        ),
        Row(
            "tier_day_aggregate",
            aggregate_s,
            "s to aggregate the day's 24 hours and roll the day up",
            None,
            None,
            None,
            "<= 60 s",
            aggregate_s <= 60,
        ),
        Row(
            "tier_day_expire",
            expire_s * 1000,
            f"ms to expire the day's events ({how})",
            None,
            None,
            None,
            "<= 60 000 ms",
            expire_s <= 60,
        ),
    ]
