"""The cover of a range: which stored periods stand in for runs of base rows, and which rows stay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voicemon.domain.periods import (
    BLOCK,
    BLOCKS,
    Cover,
    Period,
    complete_blocks,
    plan_cover,
    units_above,
)
from voicemon.domain.timeutil import DAY_MS, HOUR_MS

LENGTH = {**{t: b.length_ms for t, b in BLOCK.items()}, "daily": DAY_MS}
ORIGIN = 20_032 * DAY_MS  # a day number divisible by 64: every block kind starts here


def base_starts(base: Period, start: int, end: int) -> list[int]:
    first = -(-start // base.length_ms) * base.length_ms
    return list(range(first, end, base.length_ms))


def read_by(cover: Cover, base: Period, start: int, end: int) -> list[int]:
    """Every base start the cover reads, once per time it reads it."""
    out = []
    for period_type, at in cover.pieces:
        out += range(at, at + LENGTH[period_type], base.length_ms)
    for a, b in cover.gaps:
        out += base_starts(base, a, b)
    return sorted(out)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Period, int, int, set[tuple[str, int]]]:
    base = draw(st.sampled_from(list(Period)))
    span = 140 * DAY_MS
    start = (
        ORIGIN + draw(st.integers(0, span // HOUR_MS)) * HOUR_MS + draw(st.sampled_from([0, 0, 1, 59_000]))
    )
    end = start + draw(st.integers(1, span // HOUR_MS)) * HOUR_MS - draw(st.sampled_from([0, 0, 1]))
    usable: set[tuple[str, int]] = set()
    for unit in units_above(base):
        slots = span // unit.length_ms + 2
        picked = draw(st.sets(st.integers(-1, slots), max_size=12))
        usable |= {(unit.period_type, ORIGIN + n * unit.length_ms) for n in picked}
    return base, start, end, usable


@given(cases())
@settings(max_examples=500, deadline=None)
def test_a_cover_reads_every_base_row_of_the_range_exactly_once(
    case: tuple[Period, int, int, set[tuple[str, int]]],
) -> None:
    base, start, end, usable = case
    cover = plan_cover(base, start, end, usable)
    assert read_by(cover, base, start, end) == base_starts(base, start, end)
    assert set(cover.pieces) <= usable
    for period_type, at in cover.pieces:
        assert at % LENGTH[period_type] == 0  # aligned, as stored blocks are


@given(cases())
@settings(max_examples=300, deadline=None)
def test_a_cover_never_leaves_a_usable_piece_unused_where_it_would_fit_whole(
    case: tuple[Period, int, int, set[tuple[str, int]]],
) -> None:
    base, start, end, usable = case
    cover = plan_cover(base, start, end, usable)
    for period_type, at in usable:
        length = LENGTH[period_type]
        inside = at >= start and at + length - base.length_ms < end
        if inside:
            # Some chosen piece overlaps it: it was used, or a larger piece took its place.
            assert any(p_at < at + length and at < p_at + LENGTH[p_type] for p_type, p_at in cover.pieces), (
                period_type,
                at,
            )


def test_ninety_days_read_as_a_dozen_blocks_at_most() -> None:
    start = ORIGIN + 5 * DAY_MS
    usable = {
        (b.period_type, ORIGIN + n * b.length_ms)
        for b in BLOCKS
        for n in range(0, 200 * DAY_MS // b.length_ms)
    }
    cover = plan_cover(Period.DAILY, start, start + 90 * DAY_MS, usable)
    assert len(cover.pieces) + sum((b - a) // DAY_MS for a, b in cover.gaps) <= 12
    # Day 5 and day 94 are odd: no block starts on the first or ends after the second.
    assert cover.gaps == ((start, start + DAY_MS), (start + 89 * DAY_MS, start + 90 * DAY_MS))


def test_hourly_ranges_read_whole_days_as_daily_rows_and_the_edges_as_hour_blocks() -> None:
    start = ORIGIN + 21 * HOUR_MS
    end = ORIGIN + 3 * DAY_MS + 3 * HOUR_MS
    usable = {
        ("daily", ORIGIN + DAY_MS),
        ("daily", ORIGIN + 2 * DAY_MS),
        ("days2", ORIGIN),  # merges daily rows: never part of an hourly cover
        ("hours2", ORIGIN + 20 * HOUR_MS),  # starts before the range
        ("hours2", ORIGIN + 22 * HOUR_MS),
        ("hours8", ORIGIN + 2 * DAY_MS),  # inside a usable day: the day is taken whole
        ("hours2", ORIGIN + 3 * DAY_MS),
        ("hours4", ORIGIN + 3 * DAY_MS),  # holds an hour past the range
    }
    cover = plan_cover(Period.HOURLY, start, end, usable)
    assert cover.pieces == (
        ("hours2", ORIGIN + 22 * HOUR_MS),
        ("daily", ORIGIN + DAY_MS),
        ("daily", ORIGIN + 2 * DAY_MS),
        ("hours2", ORIGIN + 3 * DAY_MS),
    )
    assert cover.gaps == ((start, ORIGIN + 22 * HOUR_MS), (ORIGIN + 3 * DAY_MS + 2 * HOUR_MS, end))


def test_only_ended_blocks_are_marked() -> None:
    day = ORIGIN + 7 * DAY_MS  # the last day of the 2-, 4- and 8-day blocks that hold it
    marked = complete_blocks(Period.DAILY, day, day + DAY_MS)
    assert marked == [("days2", ORIGIN + 6 * DAY_MS), ("days4", ORIGIN + 4 * DAY_MS), ("days8", ORIGIN)]
    assert complete_blocks(Period.DAILY, ORIGIN + 6 * DAY_MS, day) == []  # its 2-day block still runs
    assert ("days16", ORIGIN) in complete_blocks(Period.DAILY, day, ORIGIN + 16 * DAY_MS)
    hour = ORIGIN + 13 * HOUR_MS
    assert complete_blocks(Period.HOURLY, hour, hour + HOUR_MS) == [("hours2", ORIGIN + 12 * HOUR_MS)]
    assert complete_blocks(Period.HOURLY, hour, ORIGIN + DAY_MS) == [
        ("hours2", ORIGIN + 12 * HOUR_MS),
        ("hours4", ORIGIN + 12 * HOUR_MS),
        ("hours8", ORIGIN + 8 * HOUR_MS),
    ]
