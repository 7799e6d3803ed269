"""Latency sketches: DDSketch (1 % relative accuracy) behind our own small interface and binary form.

Percentiles are never averaged: a sketch over many periods or organizations is the merge of their
sketches, and a quantile is read from the merged sketch. Latencies are never negative, so only the
positive store and the zero count are kept.

Binary form (little-endian): ``u8 version, u8 width, f64 zero_count, f64 sum, f64 min, f64 max,
i32 first_key, u32 bin_count``, then ``bin_count`` unsigned bin counts of ``width`` bytes (4 or 8).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from ddsketch import DDSketch
from numpy.typing import NDArray

RELATIVE_ACCURACY = 0.01
_VERSION = 1
_HEADER = struct.Struct("<BBddddiI")
_HEADER_DTYPE = np.dtype(
    [
        ("version", "u1"),
        ("width", "u1"),
        ("zero", "<f8"),
        ("sum", "<f8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("first", "<i4"),
        ("n", "<u4"),
    ]
)
assert _HEADER_DTYPE.itemsize == _HEADER.size
_GAP = b"\0\0"
_BLOBS_AT_ONCE = 2048
_U32_MAX = 2**32 - 1
_LN2 = math.log(2)
# Below this many values a plain loop is cheaper than building arrays.
_VECTOR_MIN = 32


class _Dense(NamedTuple):
    """A sketch as arrays, read-only: what decoding and merging produce. ``bins[i]`` counts key
    ``first + i``; the first and last bins are not empty (or there are none). ``samples``: the number of
    samples, summed once when the arrays are made (a breakdown of 1000 organizations asks for it often)."""

    zero: float
    total: float
    low: float
    high: float
    first: int
    bins: NDArray[np.float64]
    samples: int


_MAPPING = DDSketch(RELATIVE_ACCURACY)._mapping


class LatencySketch:
    """A mergeable distribution of non-negative values (milliseconds).

    A sketch that was decoded or merged stays in a dense array form, which answers quantiles and encodes
    without building DDSketch's store; the first value added to it turns it into a DDSketch.

    >>> s = LatencySketch(); s.add_many([100, 200, 300]); s.count, abs((s.quantile(0.5) or 0) - 200) <= 2
    (3, True)
    >>> LatencySketch.from_bytes(s.to_bytes()).count
    3
    """

    __slots__ = ("_dd", "_dense")

    def __init__(self) -> None:
        self._dd: DDSketch | None = None
        self._dense: _Dense | None = None

    @property
    def _sketch(self) -> DDSketch:
        """The DDSketch to add to (built from the dense form on first use)."""
        if self._dd is None:
            sk = DDSketch(RELATIVE_ACCURACY)
            d = self._dense
            if d is not None:
                if len(d.bins):
                    _set_bins(sk._store, d.first, d.bins)
                sk._zero_count = d.zero
                sk._count = sk._store.count + d.zero
                sk._sum, sk._min, sk._max = d.total, d.low, d.high
            self._dd, self._dense = sk, None
        return self._dd

    def _view(self) -> _Dense | None:
        """The content as arrays (None when empty), from whichever form the sketch is in."""
        if self._dense is not None:
            return self._dense
        sk = self._dd
        if sk is None or sk.count == 0:
            return None
        store = sk._store
        if store.count > 0:
            first = store.min_key
            bins = np.asarray(store.bins[first - store.offset : store.max_key - store.offset + 1])
        else:
            first, bins = 0, _NO_BINS
        return _Dense(sk._zero_count, sk._sum, sk._min, sk._max, first, bins, int(sk.count))

    @property
    def count(self) -> int:
        if self._dd is not None:
            return int(self._dd.count)
        return self._dense.samples if self._dense is not None else 0

    def add(self, value_ms: float) -> None:
        self._sketch.add(max(0.0, value_ms))

    def add_many(self, values_ms: Sequence[float] | NDArray[np.float64]) -> None:
        """Add many values at once: their keys are computed in one vectorised pass (the same mapping as
        DDSketch's ``LogarithmicMapping.key``), then each touched bin is added with its count."""
        if len(values_ms) < _VECTOR_MIN:
            add = self._sketch.add
            for value in values_ms:
                add(value if value > 0 else 0.0)
            return
        sk = self._sketch
        arr = np.asarray(values_ms, dtype=np.float64)
        arr = np.where(arr > 0, arr, 0.0)
        positive = arr[arr > sk._mapping.min_possible]
        zeros = len(arr) - len(positive)
        if len(positive):
            keys = np.ceil(np.log(positive) / _LN2 * sk._mapping._multiplier).astype(np.int64)
            low = int(keys.min())
            bins = np.bincount(keys - low).astype(np.float64)
            store = sk._store
            if store.count > 0:
                # Add the bins already held, as arrays (no per-bin calls into the store).
                first = min(low, store.min_key)
                held = np.asarray(store.bins[store.min_key - store.offset : store.max_key - store.offset + 1])
                total = np.zeros(max(low + len(bins), store.max_key + 1) - first)
                total[store.min_key - first : store.min_key - first + len(held)] += held
                total[low - first : low - first + len(bins)] += bins
                low, bins = first, total
            _set_bins(store, low, bins)
        sk._zero_count += zeros
        sk._count += len(arr)
        sk._sum += float(arr.sum())
        sk._min = min(sk._min, float(arr.min()))
        sk._max = max(sk._max, float(arr.max()))

    def merge(self, other: LatencySketch) -> None:
        if other.count:
            self._sketch.merge(other._sketch)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank quantile (the smallest sample with at least ``q`` of all samples at or below
        it), within 1 % of the exact one; None when empty.

        DDSketch's own ``get_quantile_value`` takes the rank ``q * (n - 1)`` rounded down, which reports
        the third of four samples as their p95; an operator reading "p95" expects 95 % of samples at or
        below it, so the rank is ``ceil(q * n) - 1`` here.
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """:meth:`quantile` of each of ``qs``, reading the bins once."""
        d = self._view()
        n = self.count
        if d is None or n == 0:
            return [None for _ in qs]
        ranks = [min(n - 1, max(0, math.ceil(q * n) - 1)) - d.zero for q in qs]
        out: list[float | None] = [0.0] * len(qs)  # a rank inside the zero count is 0
        binned = [i for i, rank in enumerate(ranks) if rank >= 0]
        if binned:
            # The first bin whose running count passes each rank (DenseStore.key_at_rank), in one search.
            running = np.cumsum(d.bins)
            found = np.searchsorted(running, [ranks[i] for i in binned], side="right")
            last = len(running) - 1
            for i, index in zip(binned, found.tolist(), strict=True):
                out[i] = float(_MAPPING.value(d.first + min(index, last)))
        return out

    def to_bytes(self) -> bytes:
        d = self._view()
        if d is None:
            return b""
        counts = np.rint(d.bins).astype(np.uint64)
        width = 4 if (not len(counts) or int(counts.max()) <= _U32_MAX) else 8
        body = counts.astype("<u4" if width == 4 else "<u8").tobytes()
        header = _HEADER.pack(_VERSION, width, d.zero, d.total, d.low, d.high, d.first, len(counts))
        return header + body

    @classmethod
    def from_bytes(cls, data: bytes | None) -> LatencySketch:
        return merge_encoded([data] if data else [])

    @classmethod
    def _from_dense(
        cls, zero_count: float, total: float, low: float, high: float, first: int, bins: Any
    ) -> LatencySketch:
        out = cls()
        bins = np.asarray(bins, dtype=np.float64)
        count = int(zero_count + bins.sum())
        if count:
            out._dense = _Dense(
                float(zero_count), float(total), float(low), float(high), int(first), bins, count
            )
        return out


_NO_BINS = np.zeros(0, dtype=np.float64)


def _set_bins(store: Any, first: int, bins: Any) -> None:
    """Give a DDSketch dense store exactly these bins, the first one for key ``first``."""
    store.bins = np.asarray(bins, dtype=np.float64).tolist()
    store.offset = first
    store.min_key = first
    store.max_key = first + len(store.bins) - 1
    store.count = float(sum(store.bins))


def merge_encoded(blobs: Iterable[bytes | None]) -> LatencySketch:
    """Merge sketches in their binary form (one group of :func:`merge_encoded_groups`)."""
    present = [b for b in blobs if b]
    if len(present) == 1:
        return _decode_one(present[0])
    return merge_encoded_groups(present, np.zeros(len(present), dtype=np.int64), 1)[0]


def _decode_one(blob: bytes) -> LatencySketch:
    version, width, zero_count, total, low, high, first, n = _HEADER.unpack_from(blob)
    if version != _VERSION:
        raise ValueError(f"unknown sketch version {version}")
    bins = np.frombuffer(blob, dtype=np.uint32 if width == 4 else np.uint64, count=n, offset=_HEADER.size)
    return LatencySketch._from_dense(zero_count, total, low, high, first, bins)


def merge_encoded_groups(
    blobs: Sequence[bytes | None], groups: Sequence[int] | NDArray[np.int64], n_groups: int
) -> list[LatencySketch]:
    """Merge many encoded sketches into ``n_groups`` sketches at once: blob ``i`` goes into group
    ``groups[i]``.

    No sketch is decoded on its own. Every encoded sketch is 2 bytes past a multiple of 4 long, so the
    blobs are joined with 2-byte gaps after a 2-byte lead: each one's counts then start on a 4-byte
    boundary, and one ``uint32`` view of the buffer reads all of them. Headers are read with one
    structured gather, and the counts of every (group, key) are added with one ``bincount``. The result
    has the same bins, counts, minimum and maximum as merging the sketches one by one.

    >>> a, b = LatencySketch(), LatencySketch(); a.add_many([1, 2]); b.add(3)
    >>> [s.count for s in merge_encoded_groups([a.to_bytes(), b.to_bytes(), a.to_bytes()], [0, 1, 1], 2)]
    [2, 3]
    """
    group_of = np.asarray(groups, dtype=np.int64)
    if len(group_of) > _BLOBS_AT_ONCE or n_groups > _BLOBS_AT_ONCE:
        # A few thousand blobs at a time, whole groups each: the arrays stay small enough to be cheap
        # to allocate and to stay in cache, which beats one pass over everything.
        order = np.argsort(group_of, kind="stable")
        ends = np.cumsum(np.bincount(group_of, minlength=n_groups))
        out: list[LatencySketch] = []
        g0 = 0
        while g0 < n_groups:
            taken = int(ends[g0 - 1]) if g0 else 0
            g1 = max(g0 + 1, int(np.searchsorted(ends, taken + _BLOBS_AT_ONCE, side="right")))
            g1 = min(g1, n_groups, g0 + _BLOBS_AT_ONCE)
            chosen = order[taken : int(ends[g1 - 1])]
            out += _merge_groups([blobs[i] for i in chosen], group_of[chosen] - g0, g1 - g0)
            g0 = g1
        return out
    return _merge_groups(blobs, group_of, n_groups)


def _merge_groups(
    blobs: Sequence[bytes | None], group_of: NDArray[np.int64], n_groups: int
) -> list[LatencySketch]:
    keep = [i for i, blob in enumerate(blobs) if blob]
    if not keep:
        return [LatencySketch() for _ in range(n_groups)]
    present = [blobs[i] or b"" for i in keep]
    group = group_of[keep]
    lengths = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
    joined = _GAP + _GAP.join(present)
    data = np.frombuffer(joined + bytes(-len(joined) % 4), dtype=np.uint8)
    starts = np.cumsum(lengths + len(_GAP)) - lengths
    head = data[starts[:, None] + np.arange(_HEADER.size)].view(_HEADER_DTYPE)[:, 0]
    if (head["version"] != _VERSION).any():
        raise ValueError("unknown sketch version")

    zero = np.bincount(group, weights=head["zero"], minlength=n_groups)
    total = np.bincount(group, weights=head["sum"], minlength=n_groups)
    low = np.full(n_groups, math.inf)
    high = np.full(n_groups, -math.inf)
    np.minimum.at(low, group, head["min"])
    np.maximum.at(high, group, head["max"])

    sizes = head["n"].astype(np.int64)
    firsts = head["first"].astype(np.int64)
    has_bins = sizes > 0
    if not has_bins.any():
        return [LatencySketch._from_dense(zero[g], total[g], low[g], high[g], 0, ()) for g in range(n_groups)]
    lo = int(firsts[has_bins].min())
    span = int((firsts + sizes)[has_bins].max()) - lo
    dense = np.zeros(n_groups * span)
    narrow = has_bins & (head["width"] == 4)
    if narrow.any():
        counts = data.view(np.uint32)
        n = sizes[narrow]
        source = (starts[narrow] + _HEADER.size) // 4
        target = group[narrow] * span + firsts[narrow] - lo
        begins = np.cumsum(n) - n
        index = np.arange(int(n.sum())) + np.repeat(source - begins, n)
        dense += np.bincount(
            index + np.repeat(target - source, n), weights=counts[index], minlength=len(dense)
        )
    for i in np.flatnonzero(has_bins & (head["width"] != 4)):
        # Bins wider than 32 bits (one key with more than 4 billion samples): rare, added one by one.
        wide = np.frombuffer(
            joined, dtype=np.uint64, count=int(sizes[i]), offset=int(starts[i]) + _HEADER.size
        )
        at = int(group[i]) * span + int(firsts[i]) - lo
        dense[at : at + len(wide)] += wide
    merged: list[LatencySketch] = []
    for g, row in enumerate(dense.reshape(n_groups, span)):
        used = np.flatnonzero(row)
        first, bins = (lo + int(used[0]), row[used[0] : used[-1] + 1]) if len(used) else (0, row[:0])
        merged.append(LatencySketch._from_dense(zero[g], total[g], low[g], high[g], first, bins))
    return merged
