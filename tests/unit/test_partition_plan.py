"""The partition plan (SPEC 19) as properties: every timestamp ingest accepts has its day's partition,
a dropped partition holds only rows the strict cutoff deletes, and names follow the days."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from voicemon.domain import partitions as plan
from voicemon.domain.timeutil import DAY_MS, HOUR_MS

# 2000-01-01 .. 2100-01-01
times = st.integers(946_684_800_000, 4_102_444_800_000)


@given(now=times, retention_h=st.integers(1, 24 * 60), ahead=st.integers(1, 60), offset=st.floats(0, 1))
def test_every_accepted_timestamp_has_its_day(now: int, retention_h: int, ahead: int, offset: float) -> None:
    retention = retention_h * HOUR_MS
    days = plan.days_needed(now, retention, ahead)
    # Any timestamp ingest accepts now: from now - retention to 5 minutes ahead.
    oldest, newest = now - retention, now + plan.FUTURE_MARGIN_MS
    ts = oldest + int((newest - oldest) * offset)
    assert plan.day_of(ts) in days
    assert days == sorted(set(days))
    assert all(d % DAY_MS == 0 for d in days)
    assert days[-1] >= plan.day_of(newest) + ahead * DAY_MS


@given(starts=st.lists(st.integers(0, 40_000), unique=True, max_size=30), cutoff=times)
def test_expired_partitions_hold_only_rows_before_the_cutoff(starts: list[int], cutoff: int) -> None:
    existing = [plan.Partition(d * DAY_MS, (d + 1) * DAY_MS, plan.name_of(d * DAY_MS)) for d in starts]
    doomed = plan.expired(existing, cutoff)
    assert all(p.end_ms <= cutoff for p in doomed)  # its newest possible row, end - 1, is < cutoff
    kept = set(existing) - set(doomed)
    assert all(p.end_ms > cutoff for p in kept)
    assert plan.missing([p.start_ms for p in existing], existing) == []


def test_names_follow_the_utc_day() -> None:
    day = int(datetime(2026, 12, 7, tzinfo=UTC).timestamp() * 1000)
    assert plan.name_of(day) == "events_p20261207"
    assert plan.day_of(day + DAY_MS - 1) == day
    assert plan.is_partition_name("events_p20261207")
    assert plan.is_partition_name(plan.DEFAULT_PARTITION)
    assert not plan.is_partition_name("events")
    assert not plan.is_partition_name("events_p2026120")
    assert not plan.is_partition_name("events_p2026120٣")
