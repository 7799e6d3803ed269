"""Hourly and daily periods: their bounds, which are complete, and which need (re-)aggregation; day blocks,
and the cover of a range by the largest stored periods that are exact merges of its rows."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from voicemon.domain.events import Event
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to


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
    """How many events each minute, hour and day received: ingestion bumps their versions by these
    amounts. So an hour's version is the number of events it ever received, and the sum of its minutes'
    versions (:func:`plan_minutes` relies on this)."""
    counts: Counter[tuple[str, int]] = Counter()
    for e in events:
        counts[(MINUTELY, floor_to(e.timestamp_ms, MINUTE_MS))] += 1
        counts[(Period.HOURLY.value, floor_to(e.timestamp_ms, HOUR_MS))] += 1
        counts[(Period.DAILY.value, floor_to(e.timestamp_ms, DAY_MS))] += 1
    return dict(counts)


# --- blocks and covers -------------------------------------------------------------------------------------
#
# A block holds the merge of a run of hourly rows (2, 4 or 8 hours) or of daily rows (2, 4, ... 64 days),
# aligned on multiples of its length since the epoch. A range is read as the largest stored periods that
# fit in it plus the rows left over: for 90 days, about a dozen rows per scope instead of 90; for 7 days
# of hours, about a dozen instead of 168 (whole days are read as their daily rows). The answer is the
# same, because counts add and sketches merge exactly. A stored period stands in for its rows only while
# it is fresh: its version (bumped by every change to those rows) equals the version it was computed from.

HOUR_BLOCKS = (2, 4, 8)  # all divide a day, so no hour block straddles two days
DAY_BLOCKS = (2, 4, 8, 16, 32, 64)


@dataclass(frozen=True, slots=True)
class Unit:
    """A kind of stored period that can stand in for a run of ``base`` rows."""

    period_type: str
    length_ms: int
    base: Period


BLOCKS = (
    *(Unit(f"hours{n}", n * HOUR_MS, Period.HOURLY) for n in HOUR_BLOCKS),
    *(Unit(f"days{n}", n * DAY_MS, Period.DAILY) for n in DAY_BLOCKS),
)
BLOCK = {b.period_type: b for b in BLOCKS}
BLOCK_TYPES = tuple(BLOCK)
_DAY = Unit(Period.DAILY.value, DAY_MS, Period.HOURLY)


def blocks_of(base: Period) -> tuple[str, ...]:
    """The block types that merge rows of ``base``."""
    return tuple(b.period_type for b in BLOCKS if b.base is base)


def units_above(base: Period) -> tuple[Unit, ...]:
    """What may stand in for rows of ``base``, largest first: for daily rows, day blocks; for hourly rows,
    the daily row (a whole day) and hour blocks."""
    units = [b for b in BLOCKS if b.base is base] + ([_DAY] if base is Period.HOURLY else [])
    return tuple(sorted(units, key=lambda u: -u.length_ms))


def complete_blocks(base: Period, start_ms: int, now_ms: int) -> list[tuple[str, int]]:
    """The blocks holding the ``base`` period at ``start_ms`` that have ended by ``now_ms``: a change to
    that period's rows marks them. A block still running gets its first mark when its last period is
    written.

    >>> complete_blocks(Period.HOURLY, 7 * HOUR_MS, 8 * HOUR_MS)
    [('hours2', 21600000), ('hours4', 14400000), ('hours8', 0)]
    """
    out = []
    for b in BLOCKS:
        if b.base is base:
            first = floor_to(start_ms, b.length_ms)
            if first + b.length_ms <= now_ms:
                out.append((b.period_type, first))
    return out


@dataclass(frozen=True, slots=True)
class Cover:
    """A range of base rows read as ``pieces`` (stored periods, each the exact merge of its base rows) and
    ``gaps`` (``[start, end)`` runs of base rows read as they are)."""

    pieces: tuple[tuple[str, int], ...]
    gaps: tuple[tuple[int, int], ...]


def plan_cover(base: Period, start_ms: int, end_ms: int, usable: Collection[tuple[str, int]]) -> Cover:
    """Cover the base rows starting in ``[start_ms, end_ms)``, greedily from the start, by the largest
    ``usable`` (fresh) period that is aligned, fits, and holds only rows of the range.

    >>> d = DAY_MS
    >>> plan_cover(Period.DAILY, 0, 7 * d, {("days4", 0), ("days2", 4 * d), ("days2", 0)})
    Cover(pieces=(('days4', 0), ('days2', 345600000)), gaps=((518400000, 604800000),))
    """
    units = {u.period_type: u for u in units_above(base)}
    base_ms = base.length_ms
    by_start: dict[int, list[Unit]] = {}
    for period_type, at in usable:
        if period_type in units and at >= start_ms:
            by_start.setdefault(at, []).append(units[period_type])
    starts = sorted(by_start)
    pieces: list[tuple[str, int]] = []
    gaps: list[tuple[int, int]] = []
    t = ceil_to(start_ms, base_ms)
    gap_from: int | None = None
    while t < end_ms:
        fits = [u for u in by_start.get(t, ()) if t % u.length_ms == 0 and t + u.length_ms - base_ms < end_ms]
        if fits:
            unit = max(fits, key=lambda u: u.length_ms)
            if gap_from is not None:
                gaps.append((gap_from, t))
                gap_from = None
            pieces.append((unit.period_type, t))
            t += unit.length_ms
            continue
        if gap_from is None:
            gap_from = t
        # Nothing fits here: the base rows up to the next usable start belong to the gap.
        i = bisect_right(starts, t)
        t = starts[i] if i < len(starts) else end_ms
    if gap_from is not None:
        gaps.append((gap_from, end_ms))
    return Cover(tuple(pieces), tuple(gaps))


# --- minutes: the partial aggregates of live hours -------------------------------------------------------
#
# An hour that is not aggregated yet (the hour in progress, and the hour waiting for its :30 run) is
# answered live. Rather than reading all its raw events on every request, a frequent job stores the rows
# of each ended minute (period type ``minutely``), under the same version rule as hours: ingestion bumps
# the minute's version, the row records the version it was computed from, and it stands in for its raw
# events only while the two are equal. A live hour is then its fresh minute rows, plus the raw events of
# the minutes that are not fresh: the minute in progress, and any minute a late event marked since.

MINUTELY = "minutely"
# At most this many raw-event reads per live hour: past it, everything from the first stale minute on is
# read raw in one go (a catch-up after an outage, not the steady state).
MAX_RAW_RUNS = 3


@dataclass(frozen=True, slots=True)
class MinuteCover:
    """A live hour ``[start, end)`` read as ``minute_runs`` of fresh minute rows and ``raw_runs`` of raw
    events; each is a list of ``[start, end)`` runs that never overlap and together hold every event."""

    minute_runs: tuple[tuple[int, int], ...]
    raw_runs: tuple[tuple[int, int], ...]


def plan_minutes(
    start_ms: int, end_ms: int, hour_version: int, minutes: dict[int, tuple[int, int | None]]
) -> MinuteCover:
    """How to read the live part ``[start_ms, end_ms)`` of one hour from ``minutes`` (the minute version
    rows of that hour: start -> (version, aggregated version)).

    A minute with no version row received no event: it needs no read. Every event bumps its hour and its
    minute by one, in one transaction, so the hour's version equals the sum of its minutes' versions. When
    it does not (events ingested before minutes were tracked, or minute rows pruned), the minute rows do
    not hold everything, and the whole range is read raw.

    >>> m = MINUTE_MS
    >>> plan_minutes(0, 4 * m, 6, {0: (2, 2), m: (3, 3), 3 * m: (1, None)})
    MinuteCover(minute_runs=((0, 120000),), raw_runs=((180000, 240000),))
    >>> plan_minutes(0, 4 * m, 7, {0: (2, 2), m: (3, 3), 3 * m: (1, None)}).raw_runs
    ((0, 240000),)
    """
    if sum(version for version, _ in minutes.values()) != hour_version:
        return MinuteCover((), ((start_ms, end_ms),))
    runs: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    last: bool | None = None
    for at in sorted(s for s in minutes if start_ms <= s < end_ms):
        version, done = minutes[at]
        kind = done == version
        until = min(at + MINUTE_MS, end_ms)
        if kind is last:
            # The minutes since the previous one received nothing: the run spans them.
            runs[kind][-1] = (runs[kind][-1][0], until)
        else:
            runs[kind].append((at, until))
        last = kind
    fresh, raw = runs[True], runs[False]
    if len(raw) > MAX_RAW_RUNS:
        first = raw[0][0]
        fresh = [run for run in fresh if run[1] <= first]
        raw = [(first, end_ms)]
    return MinuteCover(tuple(fresh), tuple(raw))
