"""Daily partitions of raw events (SPEC 19), as plain arithmetic: which days need a partition, which
partitions have wholly expired, and what each is called. PostgreSQL keeps one partition per UTC day; the
storage layer does the DDL, this module decides it.

A partition holds the events with ``start_ms <= ts_ms < end_ms``. Expired means every row it can hold is
older than the retention cutoff (``end_ms <= cutoff_ms``), so dropping it deletes exactly rows that the
strict cutoff of SPEC 8 deletes, and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from voicemon.domain.timeutil import DAY_MS, floor_to

PREFIX = "events_p"
_DAY_NAME = re.compile(PREFIX + "[0-9]{8}")
DEFAULT_PARTITION = "events_default"
"""Catches an event whose day has no partition yet (the job moves it out when it creates the day)."""

# Events may be stamped up to this far ahead of the clock (the validation's "in_future" rule).
FUTURE_MARGIN_MS = 5 * 60_000


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    start_ms: int
    end_ms: int
    name: str


def day_of(ms: int) -> int:
    """The start of the UTC day that holds ``ms``."""
    return floor_to(ms, DAY_MS)


def name_of(day_ms: int) -> str:
    """``events_pYYYYMMDD`` for the day starting at ``day_ms``."""
    return PREFIX + datetime.fromtimestamp(day_ms / 1000, UTC).strftime("%Y%m%d")


def is_partition_name(name: str) -> bool:
    """True for the tables this module names (a day partition or the default one)."""
    return name == DEFAULT_PARTITION or _DAY_NAME.fullmatch(name) is not None


def days_needed(now_ms: int, retention_ms: int, ahead_days: int) -> list[int]:
    """Every day an event may be stored in now or in the next ``ahead_days`` days: from the day of the
    oldest event still accepted (``now - retention``) to ``ahead_days`` days past the newest one."""
    first = day_of(now_ms - retention_ms)
    last = day_of(now_ms + FUTURE_MARGIN_MS) + ahead_days * DAY_MS
    return list(range(first, last + DAY_MS, DAY_MS))


def missing(days: Iterable[int], existing: Sequence[Partition]) -> list[int]:
    """The days of ``days`` no existing partition covers."""
    return [d for d in days if not any(p.start_ms <= d < p.end_ms for p in existing)]


def expired(existing: Sequence[Partition], cutoff_ms: int) -> list[Partition]:
    """The partitions whose every possible row is strictly older than ``cutoff_ms``, oldest first."""
    return sorted(p for p in existing if p.end_ms <= cutoff_ms)
