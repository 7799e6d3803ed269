"""Latency sketches: binary form, nearest-rank quantiles, and the merge of many encoded sketches at once."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from voicemon.domain.sketch import LatencySketch, merge_encoded, merge_encoded_groups

values = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=3_600_000.0, allow_nan=False)),
    max_size=60,
)


def sketch_of(samples: list[float]) -> LatencySketch:
    s = LatencySketch()
    s.add_many(samples)
    return s


def state(s: LatencySketch) -> tuple[int, float, list[tuple[int, float]], float | None, float | None]:
    """What a sketch answers with: count, zero count, non-empty bins, and min / max when not empty."""
    sk = s._sketch
    store = sk._store
    bins = [(store.offset + i, c) for i, c in enumerate(store.bins) if c] if store.count else []
    return (
        s.count,
        float(sk._zero_count),
        bins,
        sk._min if s.count else None,
        sk._max if s.count else None,
    )


@given(st.lists(st.tuples(values, st.integers(0, 3)), max_size=12))
@settings(max_examples=200, deadline=None)
def test_merging_groups_at_once_equals_merging_one_by_one(members: list[tuple[list[float], int]]) -> None:
    expected = [LatencySketch() for _ in range(4)]
    for samples, group in members:
        expected[group].merge(sketch_of(samples))
    blobs = [sketch_of(samples).to_bytes() for samples, _ in members]
    merged = merge_encoded_groups(blobs, [g for _, g in members], 4)
    assert [state(s) for s in merged] == [state(s) for s in expected]
    for got, want in zip(merged, expected, strict=True):
        for q in (0.5, 0.95, 0.99):
            assert got.quantile(q) == want.quantile(q)


@given(values)
def test_the_binary_form_round_trips(samples: list[float]) -> None:
    s = sketch_of(samples)
    assert state(LatencySketch.from_bytes(s.to_bytes())) == state(s)
    assert state(merge_encoded([None, s.to_bytes(), b""])) == state(s)


@given(st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), min_size=1, max_size=300))
def test_quantiles_are_within_one_percent_of_the_exact_nearest_rank(samples: list[float]) -> None:
    s = sketch_of(samples)
    ordered = sorted(samples)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        got = s.quantile(q)
        assert got is not None
        assert abs(got - exact) <= 0.01 * exact + 1e-9


def test_wide_bins_merge_with_narrow_ones() -> None:
    """A bin past 2^32 samples is stored 8 bytes wide; it merges with 4-byte ones."""
    huge = LatencySketch._from_dense(0, 0.0, 10.0, 10.0, 5, np.array([2.0**33]))
    small = sketch_of([10.0] * 3)
    assert huge.to_bytes()[1] == 8
    assert small.to_bytes()[1] == 4
    [merged] = merge_encoded_groups([huge.to_bytes(), small.to_bytes()], [0, 0], 1)
    assert merged.count == 2**33 + 3
    assert merged.quantile(0.5) == huge.quantile(0.5)


def test_empty_and_missing_sketches_merge_to_an_empty_one() -> None:
    merged = merge_encoded_groups([None, b""], [0, 1], 3)
    assert [s.count for s in merged] == [0, 0, 0]
    assert all(s.quantile(0.5) is None for s in merged)


@given(values, st.floats(min_value=0.0, max_value=1.0))
def test_a_quantile_reads_the_bin_ddsketch_finds_at_that_rank(samples: list[float], q: float) -> None:
    s = sketch_of(samples)
    if not samples:
        assert s.quantile(q) is None
        return
    sk = s._sketch
    rank = min(len(samples) - 1, max(0, math.ceil(q * len(samples)) - 1))
    if rank < sk._zero_count:
        expected = 0.0
    else:
        expected = sk._mapping.value(sk._store.key_at_rank(rank - sk._zero_count))
    assert s.quantile(q) == expected
    assert s.quantiles([q, 0.5]) == [s.quantile(q), s.quantile(0.5)]


def test_many_groups_are_merged_a_slice_at_a_time_with_the_same_result() -> None:
    samples = {0: [1.0, 2.0], 2050: [3.0], 4099: [5.0, 500.0]}
    blobs = [sketch_of(v).to_bytes() for v in samples.values()] * 2
    merged = merge_encoded_groups(blobs, list(samples) * 2, 4100)
    assert len(merged) == 4100
    for g, v in samples.items():
        assert state(merged[g]) == state(sketch_of(v * 2))
    assert sum(s.count for s in merged) == 2 * sum(len(v) for v in samples.values())


def test_many_blobs_are_merged_in_slices_with_the_same_result() -> None:
    rng = np.random.default_rng(5)
    groups = [int(g) for g in rng.integers(0, 7, size=5000)]
    sketches = [sketch_of([float(v) for v in rng.lognormal(3, 1, size=3)]) for _ in groups]
    expected = [LatencySketch() for _ in range(7)]
    for sketch, g in zip(sketches, groups, strict=True):
        expected[g].merge(sketch)
    merged = merge_encoded_groups([s.to_bytes() for s in sketches], groups, 7)
    assert [state(s) for s in merged] == [state(s) for s in expected]


many_values = st.lists(st.floats(min_value=0.0, max_value=1e7, allow_nan=False), min_size=32, max_size=200)


@given(st.lists(st.one_of(values, many_values), max_size=4))
def test_adding_many_at_once_equals_adding_one_at_a_time(batches: list[list[float]]) -> None:
    at_once, one_by_one = LatencySketch(), LatencySketch()
    for batch in batches:
        at_once.add_many(batch)
        for value in batch:
            one_by_one.add(value)
    assert state(at_once) == state(one_by_one)
