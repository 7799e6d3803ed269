"""Hourly and daily periods: their bounds, which are complete, and which need (re-)aggregation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

from voicemon.domain.events import Event
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, floor_to


class Period(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"

    @property
    def length_ms(self) -> int:
        return HOUR_MS if self is Period.HOURLY else DAY_MS


def period_start(period: Period, ms: int) -> int:
    return floor_to(ms, period.length_ms)


def ceil_to(ms: int, unit_ms: int) -> int:
    return -(-ms // unit_ms) * unit_ms


def is_complete(period: Period, start_ms: int, now_ms: int) -> bool:
    """A period is complete once its end has passed: only then may it be aggregated."""
    return start_ms + period.length_ms <= now_ms


def complete_periods(period: Period, oldest_ms: int, now_ms: int) -> list[int]:
    """Starts of the complete periods lying wholly at or after ``oldest_ms``, oldest first."""
    first = ceil_to(oldest_ms, period.length_ms)
    last_end = floor_to(now_ms, period.length_ms)
    return list(range(first, last_end, period.length_ms))


def needs_aggregation(
    starts: Iterable[int], aggregated: set[int], versions: dict[int, tuple[int, int | None]]
) -> list[int]:
    """The starts never aggregated, or whose events changed since (version above the one aggregated)."""
    todo = []
    for start in starts:
        version, done = versions.get(start, (0, None))
        if start not in aggregated or done is None or version > done:
            todo.append(start)
    return todo


def touched_periods(events: Iterable[Event]) -> dict[tuple[str, int], int]:
    """How many events each hour and day received: ingestion bumps their versions by these amounts."""
    counts: Counter[tuple[str, int]] = Counter()
    for e in events:
        counts[(Period.HOURLY.value, floor_to(e.timestamp_ms, HOUR_MS))] += 1
        counts[(Period.DAILY.value, floor_to(e.timestamp_ms, DAY_MS))] += 1
    return dict(counts)
