"""Ranges read through day blocks and daily rows give exactly the merge of the rows they stand in for,
whatever was rewritten since and whether or not the blocks were rebuilt."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import NOW_MS, STAFF, FreshServices
from tests.helpers import ev
from voicemon.domain.periods import BLOCK_TYPES, Period
from voicemon.domain.snapshot import SnapshotParts, merge_parts, render_parts
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.service import Services
from voicemon.service.aggregate import Aggregator, write_period
from voicemon.service.metrics import Range
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.snapshots import ALL_SCOPES

TODAY = floor_to(NOW_MS, DAY_MS)
FIRST = TODAY - 80 * DAY_MS
ORGS = ("org-a", "org-b", "org-c")


def random_parts(seed: int) -> SnapshotParts:
    rnd = random.Random(seed)
    p = SnapshotParts(received=rnd.randrange(50), completed=rnd.randrange(40), failed=rnd.randrange(5))
    p.cost_nusd = rnd.randrange(10**9)
    for _ in range(rnd.randrange(6)):
        p.end_to_end.add_us(rnd.randrange(1_000, 900_000_000))
        for stage in p.stages.values():
            stage.latency.add_us(rnd.randrange(100, 9_000_000))
    return p


def day_parts(seed: int, orgs: list[str]) -> dict[str, SnapshotParts]:
    parts = {org: random_parts(seed * 7 + i) for i, org in enumerate(orgs)}
    parts[""] = merge_parts(parts.values())
    return parts


def merged_rows(svc: Services, period: str, start: int, end: int) -> dict[str, SnapshotParts]:
    """The truth: every row of the range, merged per scope."""
    with svc.db.read() as conn:
        rows = snapshot_store.load_rows(conn, period, start, end, ALL_SCOPES)
    by_scope: dict[str, list[SnapshotParts]] = {}
    for row in rows:
        by_scope.setdefault(row.scope, []).append(row.parts)
    return {scope: merge_parts(group) for scope, group in by_scope.items()}


def assert_range_answers(svc: Services, r: Range) -> None:
    truth = merged_rows(svc, r.period.value, r.start_ms, r.end_ms)
    empty = render_parts(SnapshotParts())
    for scope in ("", *ORGS):
        got = svc.metrics.summary(STAFF, r, scope or None).parts
        assert render_parts(got) == (render_parts(truth[scope]) if scope in truth else empty), scope
    breakdown = {i.organization_id: i.parts for i in svc.metrics.by_organization(STAFF, r).items}
    assert set(breakdown) == set(truth) - {""}
    for org, parts in breakdown.items():
        want = truth[org]
        assert (parts.received, parts.completed, parts.failed, parts.cost_nusd) == (
            want.received,
            want.completed,
            want.failed,
            want.cost_nusd,
        )
        assert parts.end_to_end.render() == want.end_to_end.render(), org


EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
days = st.integers(0, 79).map(lambda n: FIRST + n * DAY_MS)
writes = st.lists(
    st.tuples(days, st.lists(st.sampled_from(ORGS), unique=True), st.booleans()),
    min_size=1,
    max_size=40,
)


@EXAMPLES
@given(writes=writes, ranges=st.lists(st.tuples(days, st.integers(1, 80)), min_size=1, max_size=4))
def test_daily_ranges_equal_the_merge_of_their_days_whatever_the_blocks_hold(
    fresh_services: FreshServices, writes: list[tuple[int, list[str], bool]], ranges: list[tuple[int, int]]
) -> None:
    with fresh_services() as svc:
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        for seed, (day, orgs, rebuild) in enumerate(writes):
            with svc.db.write() as conn:
                write_period(conn, Period.DAILY, day, day_parts(seed, orgs), NOW_MS, 0)
            if rebuild:  # otherwise the blocks holding the day stay marked, and must not be read
                agg.rebuild_blocks()
        assert_range_answers(svc, Range(Period.DAILY, FIRST, TODAY))
        for start, length in ranges:
            assert_range_answers(svc, Range(Period.DAILY, start, min(start + length * DAY_MS, TODAY)))


# Hours of three days outside raw retention (48 h) but inside hourly retention (7 d): the daily roll-up
# merges what is stored and redoes no hour from events.
HOURS_FROM = TODAY - 5 * DAY_MS
hours = st.integers(0, 3 * 24 - 1).map(lambda n: HOURS_FROM + n * HOUR_MS)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("hour"), hours, st.lists(st.sampled_from(ORGS), unique=True)),
        st.tuples(st.just("day"), st.integers(0, 2).map(lambda n: HOURS_FROM + n * DAY_MS), st.booleans()),
        st.tuples(st.just("rebuild")),
    ),
    min_size=1,
    max_size=50,
)


@EXAMPLES
@given(steps=steps, ranges=st.lists(st.tuples(hours, st.integers(1, 80)), min_size=1, max_size=4))
def test_hourly_ranges_equal_the_merge_of_their_hours_whatever_days_and_blocks_hold(
    fresh_services: FreshServices, steps: list[tuple[Any, ...]], ranges: list[tuple[int, int]]
) -> None:
    with fresh_services() as svc:
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        for seed, step in enumerate(steps):
            if step[0] == "hour":
                with svc.db.write() as conn:
                    write_period(conn, Period.HOURLY, step[1], day_parts(seed, step[2]), NOW_MS, 0)
            elif step[0] == "day":
                agg.aggregate_day(step[1], blocks=step[2])
            else:
                agg.rebuild_blocks()
        # The three whole days (each read as its daily row while fresh), then ranges at random.
        assert_range_answers(svc, Range(Period.HOURLY, HOURS_FROM - HOUR_MS, HOURS_FROM + 3 * DAY_MS + 1))
        for start, length in ranges:
            assert_range_answers(svc, Range(Period.HOURLY, start, start + length * HOUR_MS))


def block_rows(svc: Services) -> dict[tuple[str, int], int]:
    """Platform rows of every day block: (type, start) -> artifacts received."""
    out = {}
    with svc.db.read() as conn:
        for period_type in BLOCK_TYPES:
            for row in snapshot_store.load_rows(conn, period_type, 0, TODAY, ""):
                out[(period_type, row.period_start_ms)] = row.parts.received
    return out


def test_blocks_are_built_once_ended_and_rebuilt_when_a_day_changes(fresh_services: FreshServices) -> None:
    with fresh_services() as svc:
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        start = floor_to(TODAY - 40 * DAY_MS, 16 * DAY_MS)  # 16 whole days, all ended
        with svc.db.write() as conn:
            for d in range(16):
                write_period(
                    conn, Period.DAILY, start + d * DAY_MS, {"": SnapshotParts(received=d + 1)}, NOW_MS, 0
                )
        # The 32- and 64-day blocks around these days are built too if they have ended.
        larger = [n for n in (32, 64) if floor_to(start, n * DAY_MS) + n * DAY_MS <= NOW_MS]
        assert agg.rebuild_blocks() == 8 + 4 + 2 + 1 + len(larger)
        blocks = block_rows(svc)
        assert blocks[("days16", start)] == sum(range(1, 17))
        assert blocks[("days4", start + 4 * DAY_MS)] == 5 + 6 + 7 + 8
        assert len(blocks) == 15 + len(larger)
        assert agg.rebuild_blocks() == 0  # nothing marked: nothing to do

        # Day 5 changes: exactly its four blocks are marked and rebuilt.
        with svc.db.write() as conn:
            write_period(conn, Period.DAILY, start + 5 * DAY_MS, {"": SnapshotParts(received=100)}, NOW_MS, 0)
        assert agg.rebuild_blocks() == 4 + len(larger)
        after = block_rows(svc)
        changed = {k for k in blocks if blocks[k] != after[k]}
        assert changed == {
            ("days2", start + 4 * DAY_MS),
            ("days4", start + 4 * DAY_MS),
            ("days8", start),
            ("days16", start),
            *((f"days{n}", floor_to(start, n * DAY_MS)) for n in larger),
        }
        assert after[("days16", start)] == sum(range(1, 17)) - 6 + 100


def _received(svc: Services, r: Range) -> tuple[int, int | None]:
    merged = svc.metrics.summary(STAFF, r, None)
    return merged.parts.received, merged.computed_ms


def test_a_day_stands_in_for_its_hours_only_until_one_of_them_is_redone(
    fresh_services: FreshServices,
) -> None:
    yesterday = TODAY - DAY_MS
    with fresh_services() as svc:
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        svc.ingest_blocking(
            [ev("artifact_received", f"a{i}", yesterday + i * HOUR_MS + MINUTE_MS) for i in range(24)], STAFF
        )
        for h in range(24):
            agg.aggregate_hour(yesterday + h * HOUR_MS)
        assert hasattr(svc.clock, "advance")
        svc.clock.advance(MINUTE_MS)
        rolled_at = svc.clock.now_ms()
        assert format_time(yesterday) in agg.daily_catch_up()["aggregated"]
        whole = Range(Period.HOURLY, yesterday - 2 * HOUR_MS, TODAY + HOUR_MS)
        assert _received(svc, whole) == (24, rolled_at)  # read as the daily row, computed last

        # A late event: its hour is redone, which marks the day. The range reads the hours again.
        svc.clock.advance(MINUTE_MS)
        svc.ingest_blocking([ev("artifact_received", "late", yesterday + 5 * HOUR_MS + 7)], STAFF)
        redone_at = svc.clock.now_ms()
        agg.aggregate_hour(yesterday + 5 * HOUR_MS)
        assert _received(svc, whole) == (25, redone_at)

        # The daily job sees the mark and rolls the day up again; the daily row stands in once more.
        svc.clock.advance(MINUTE_MS)
        summary: dict[str, Any] = agg.daily_catch_up()
        assert summary["aggregated"] == [format_time(yesterday)]
        assert summary["hours_redone"] == 0
        assert _received(svc, whole) == (25, svc.clock.now_ms())
        assert agg.daily_catch_up()["aggregated"] == []


def test_an_hour_redone_after_its_day_was_rolled_up_marks_the_day(
    fresh_services: FreshServices, monkeypatch: Any
) -> None:
    """The race this closes: a late event commits after the daily roll-up looked for marked hours and
    before it read the day's version. The day's row then lacks the event while its version counts it;
    only the mark the hour's redo puts on the day gets the day rolled up again."""
    yesterday = TODAY - DAY_MS
    hour = yesterday + 9 * HOUR_MS
    with fresh_services() as svc:
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        svc.ingest_blocking([ev("artifact_received", "a", hour + MINUTE_MS)], STAFF)
        agg.hourly_catch_up()
        agg.daily_catch_up()
        whole = Range(Period.HOURLY, yesterday, TODAY)
        assert _received(svc, whole)[0] == 1

        svc.ingest_blocking([ev("artifact_received", "late", hour + 2 * MINUTE_MS)], STAFF)
        with monkeypatch.context() as m:
            m.setattr(agg, "_hours_needing_work", lambda *_: [])  # it looked before the event came
            agg.aggregate_day(yesterday)
        assert merged_rows(svc, "daily", yesterday, TODAY)[""].received == 1  # the day lacks it

        # The hour's redo marks its day, and the same hourly run rolls the day up again.
        assert agg.hourly_catch_up()["days_redone"] == [format_time(yesterday)]
        assert _received(svc, whole)[0] == 2
        assert merged_rows(svc, "daily", yesterday, TODAY)[""].received == 2
        assert agg.daily_catch_up()["aggregated"] == []


def test_hour_blocks_are_built_once_ended_and_rebuilt_when_an_hour_changes(
    fresh_services: FreshServices,
) -> None:
    day = TODAY - 3 * DAY_MS
    with fresh_services() as svc:
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        with svc.db.write() as conn:
            for h in range(8, 16):
                parts = {"": SnapshotParts(received=h)}
                write_period(conn, Period.HOURLY, day + h * HOUR_MS, parts, NOW_MS, 0)
        assert agg.rebuild_blocks() == 4 + 2 + 1
        blocks = block_rows(svc)
        assert blocks == {
            **{("hours2", day + h * HOUR_MS): h + h + 1 for h in (8, 10, 12, 14)},
            ("hours4", day + 8 * HOUR_MS): 8 + 9 + 10 + 11,
            ("hours4", day + 12 * HOUR_MS): 12 + 13 + 14 + 15,
            ("hours8", day + 8 * HOUR_MS): sum(range(8, 16)),
        }
        with svc.db.write() as conn:
            write_period(conn, Period.HOURLY, day + 13 * HOUR_MS, {"": SnapshotParts(received=50)}, NOW_MS, 0)
        assert agg.rebuild_blocks() == 3
        assert block_rows(svc)[("hours8", day + 8 * HOUR_MS)] == sum(range(8, 16)) - 13 + 50
        # The hours read as one block: 8 hourly rows in, one row out.
        merged = svc.metrics.summary(STAFF, Range(Period.HOURLY, day + 8 * HOUR_MS, day + 16 * HOUR_MS), None)
        assert merged.parts.received == sum(range(8, 16)) - 13 + 50
