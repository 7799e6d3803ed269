"""What a range reply covers (SPEC 7): which periods of a range are read from stored rows, which are
computed live at query time, which are missing or stale, and how fresh the answer is. No I/O.

A range asks for the periods that start in ``[start, end)``. Of those that have begun by now:

- *aggregated* periods have stored rows and are read from them (a stale one, marked by a late event
  since, is still read, and listed in ``stale`` until the next hourly run redoes it);
- *live* periods are newer than the newest aggregated period of their type and still computable from
  what they are built from (raw events for an hour, hourly rows and raw events for a day): the hour in
  progress, and the hour that ended but waits for its :30 run. At most :data:`MAX_LIVE_PERIODS`, the
  newest ones;
- the other complete periods are *missing*: never aggregated, and not computable any more (or beyond the
  live limit). A silent zero would read as "nothing happened"; ``missing`` says it is "not known".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from voicemon.domain.periods import Period, ceil_to

MAX_LIVE_PERIODS = 3
MAX_LISTED = 50


@dataclass(frozen=True, slots=True)
class RangePlan:
    """How one range is answered. Starts are period starts (ms), oldest first."""

    period: Period
    expected: tuple[int, ...]
    stored: tuple[int, ...]
    live: tuple[int, ...]
    missing: tuple[int, ...]
    stale: tuple[int, ...]
    aligned_start_ms: int
    now_ms: int

    @property
    def included(self) -> tuple[int, ...]:
        """The periods whose figures the answer merges, oldest first."""
        return tuple(sorted((*self.stored, *self.live)))

    @property
    def period_start_ms(self) -> int:
        """Start of the first period merged; the range's aligned start when none is."""
        included = self.included
        return included[0] if included else self.aligned_start_ms

    @property
    def period_end_ms(self) -> int:
        """End of the last period merged (it may lie ahead for the period in progress)."""
        included = self.included
        return included[-1] + self.period.length_ms if included else self.aligned_start_ms

    @property
    def data_through_ms(self) -> int | None:
        """Up to when the answer has data: the end of the newest period merged, or now while that period
        is in progress; None when nothing is merged."""
        included = self.included
        return min(included[-1] + self.period.length_ms, self.now_ms) if included else None

    @property
    def live_from_ms(self) -> int | None:
        """Start of the first period computed live, if any."""
        return self.live[0] if self.live else None

    def describe(self) -> str:
        """What the answer covers and how fresh it is, in one line a person reads under a figure.

        >>> h = Period.HOURLY.length_ms
        >>> p = plan_range(Period.HOURLY, 0, 5 * h, 4 * h + 37 * 60_000, stored={0, h}, stale=set(),
        ...                newest_stored_ms=h, live_from_ms=0)
        >>> p.describe() == "data through 02:00 UTC; 02:00\u201304:37 UTC live"
        True
        """
        parts = []
        if self.stored:
            parts.append(f"data through {_clock(max(self.stored) + self.period.length_ms, self.now_ms)}")
        if self.live:
            start = _clock(self.live[0], self.now_ms).removesuffix(" UTC")
            parts.append(f"{start}\u2013{_clock(min(self.period_end_ms, self.now_ms), self.now_ms)} live")
        if not parts:
            parts.append("no data in this range")
        unit = "hour" if self.period is Period.HOURLY else "day"
        if self.missing:
            n = len(self.missing)
            parts.append(f"{n}{'+' if n == MAX_LISTED else ''} {unit}{'s' if n != 1 else ''} missing")
        if self.stale:
            parts.append(f"{len(self.stale)} {unit}{'s' if len(self.stale) != 1 else ''} being redone")
        return "; ".join(parts)


def plan_range(
    period: Period,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    *,
    stored: Collection[int],
    stale: Collection[int],
    newest_stored_ms: int | None,
    live_from_ms: int,
) -> RangePlan:
    """Plan the periods starting in ``[start_ms, end_ms)``.

    ``stored``: starts in range with stored rows; ``stale``: stored starts marked since; ``newest_stored_ms``:
    the newest stored start of this period type anywhere (None if none); ``live_from_ms``: the oldest start
    that can still be computed live (its sources are all kept).

    >>> h = Period.HOURLY.length_ms
    >>> p = plan_range(Period.HOURLY, 0, 5 * h, 4 * h + 5, stored={0, h}, stale=set(),
    ...                newest_stored_ms=h, live_from_ms=0)
    >>> (p.stored, p.live, p.missing, p.period_end_ms, p.data_through_ms)
    ((0, 3600000), (7200000, 10800000, 14400000), (), 18000000, 14400005)
    """
    length = period.length_ms
    first = ceil_to(start_ms, length)
    expected = tuple(range(first, min(end_ms, now_ms + 1), length)) if first < end_ms else ()
    got = set(stored)
    have = tuple(s for s in expected if s in got)
    candidates = [
        s
        for s in expected
        if s not in got and s >= live_from_ms and (newest_stored_ms is None or s > newest_stored_ms)
    ]
    live = tuple(candidates[-MAX_LIVE_PERIODS:])
    live_set = set(live)
    missing = tuple(s for s in expected if s not in got and s not in live_set and s + length <= now_ms)[
        :MAX_LISTED
    ]
    stale_set = set(stale)
    marked = tuple(s for s in have if s in stale_set)[:MAX_LISTED]
    return RangePlan(period, expected, have, live, missing, marked, first, now_ms)


def _clock(ms: int, now_ms: int) -> str:
    """``14:00 UTC`` on the day of ``now_ms``, ``2026-12-01 14:00 UTC`` on another day."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    today = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
    return moment.strftime("%H:%M UTC" if moment.date() == today else "%Y-%m-%d %H:%M UTC")
