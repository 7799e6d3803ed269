"""What every benchmark step shares: the result row, the sizes of a run, and filled services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.workload import batches
from voicemon.clock import SystemClock
from voicemon.domain.access import SYSTEM, Principal, Role
from voicemon.domain.artifacts import fold
from voicemon.domain.counters import bucket_deltas
from voicemon.domain.periods import touched_periods
from voicemon.domain.timeutil import HOUR_MS
from voicemon.service import Services
from voicemon.service.ingest import validate_items
from voicemon.settings import Settings
from voicemon.storage import artifacts as artifact_store
from voicemon.storage.counters import add_to_buckets
from voicemon.storage.dialect import bulk_insert
from voicemon.storage.events import INSERT_COLUMNS, _to_row
from voicemon.storage.snapshots import bump_versions
from voicemon.storage.tables import events as events_table

STAFF = Principal("bench", "bench", Role.STAFF)


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline: str | None
    baseline_value: float | None
    ratio: float | None
    goal: str
    meets_goal: bool


@dataclass(frozen=True)
class Sizes:
    ingest_events: int
    single_seconds: float
    sdk_calls: int
    realtime_events: int
    hour_events: int
    day_orgs: int
    range_days: int
    range_orgs: int
    week_orgs: int
    week_events_per_hour: int
    live_events: int
    alert_orgs: int
    alert_events: int
    export_events: int
    otlp_spans: int
    retention_events: int
    tier_events: int


FULL = Sizes(
    300_000,
    10,
    200_000,
    200_000,
    1_000_000,
    100,
    90,
    1000,
    100,
    2000,
    100_000,
    1000,
    100_000,
    1_000_000,
    100_000,
    1_000_000,
    250_000,
)
QUICK = Sizes(
    20_000,
    3,
    20_000,
    20_000,
    100_000,
    100,
    90,
    200,
    30,
    150,
    10_000,
    200,
    20_000,
    100_000,
    10_000,
    100_000,
    25_000,
)


def services_for(url: str, clock: Any = None, **overrides: Any) -> Services:
    settings = Settings(database_url=url, key_cache_s=5, event_retention_h=240, **overrides)
    svc = Services(settings, clock or SystemClock())
    svc.start()  # on PostgreSQL this also makes the day partitions of the retention window
    return svc


def ingest_key(url: str) -> str:
    """An ingest key on the database at ``url`` (migrated, partitions made, by a short-lived service)."""
    svc = services_for(url)
    try:
        return svc.keys.create(SYSTEM, "ingest", None, "bench").secret
    finally:
        svc.stop()


def fill_raw(svc: Services, items: list[dict[str, Any]], now_ms: int) -> None:
    """Store events as ingestion would (the same event rows, artifact summaries, minute counters and
    period versions), but in large transactions: a million rows through HTTP would take longer than
    the benchmark itself."""
    valid: list[Any] = []
    for b in batches(items, 1000):
        ok, _ = validate_items(b, STAFF, now_ms, 400 * HOUR_MS)
        valid.extend(ok)
    states, timed = fold(valid, {})
    with svc.db.write() as conn:
        for i in range(0, len(timed), 20_000):
            bulk_insert(conn, events_table, INSERT_COLUMNS, [_to_row(e) for e in timed[i : i + 20_000]])
        artifact_store.insert_artifacts(conn, list(states.values()))
        add_to_buckets(conn, bucket_deltas(timed))
        bump_versions(conn, touched_periods(timed))
