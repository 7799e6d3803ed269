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
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ddsketch import DDSketch
from numpy.typing import NDArray

RELATIVE_ACCURACY = 0.01
_VERSION = 1
_HEADER = struct.Struct("<BBddddiI")
_U32_MAX = 2**32 - 1
_LN2 = math.log(2)
# Below this many values a plain loop is cheaper than building arrays.
_VECTOR_MIN = 32


class LatencySketch:
    """A mergeable distribution of non-negative values (milliseconds).

    >>> s = LatencySketch(); s.add_many([100, 200, 300]); s.count, round(s.quantile(0.5) or 0)
    (3, 200)
    >>> LatencySketch.from_bytes(s.to_bytes()).count
    3
    """

    __slots__ = ("_sketch",)

    def __init__(self) -> None:
        self._sketch = DDSketch(RELATIVE_ACCURACY)

    @property
    def count(self) -> int:
        return int(self._sketch.count)

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
            counts = np.bincount(keys - low)
            store_add = sk._store.add
            for index in np.flatnonzero(counts):
                store_add(low + int(index), float(counts[index]))
        sk._zero_count += zeros
        sk._count += len(arr)
        sk._sum += float(arr.sum())
        sk._min = min(sk._min, float(arr.min()))
        sk._max = max(sk._max, float(arr.max()))

    def merge(self, other: LatencySketch) -> None:
        self._sketch.merge(other._sketch)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank quantile (the smallest sample with at least ``q`` of all samples at or below
        it), within 1 % of the exact one; None when empty.

        DDSketch's own ``get_quantile_value`` takes the rank ``q * (n - 1)`` rounded down, which reports
        the third of four samples as their p95; an operator reading "p95" expects 95 % of samples at or
        below it, so the rank is ``ceil(q * n) - 1`` here.
        """
        sk = self._sketch
        n = int(sk.count)
        if n == 0:
            return None
        rank = min(n - 1, max(0, math.ceil(q * n) - 1))
        if rank < sk._zero_count:
            return 0.0
        key = sk._store.key_at_rank(rank - sk._zero_count)
        return float(sk._mapping.value(key))

    def to_bytes(self) -> bytes:
        sk = self._sketch
        store = sk._store
        if sk.count == 0:
            return b""
        if store.count > 0:
            first = store.min_key
            bins = store.bins[first - store.offset : store.max_key - store.offset + 1]
        else:
            first, bins = 0, []
        counts = [round(b) for b in bins]
        width = 4 if (not counts or max(counts) <= _U32_MAX) else 8
        body = array("I" if width == 4 else "Q", counts)
        if body.itemsize != width:  # pragma: no cover - platforms with other int sizes
            body = array("L" if width == 4 else "Q", counts)
        header = _HEADER.pack(_VERSION, width, sk._zero_count, sk._sum, sk._min, sk._max, first, len(counts))
        return header + body.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> LatencySketch:
        return merge_encoded([data] if data else [])

    @classmethod
    def _from_dense(
        cls, zero_count: float, total: float, low: float, high: float, first: int, bins: Any
    ) -> LatencySketch:
        out = cls()
        sk = out._sketch
        store = sk._store
        if len(bins):
            store.bins = [float(c) for c in bins]
            store.offset = first
            store.min_key = first
            store.max_key = first + len(bins) - 1
            store.count = float(sum(store.bins))
        sk._zero_count = zero_count
        sk._count = store.count + zero_count
        sk._sum = total
        sk._min = low
        sk._max = high
        return out


def merge_encoded(blobs: Iterable[bytes | None]) -> LatencySketch:
    """Merge sketches in their binary form without building a DDSketch for each one: the bins are
    added as arrays, and one sketch is made of the total. The result equals merging them one by one."""
    zero = 0.0
    total = 0.0
    low, high = math.inf, -math.inf
    segments: list[tuple[int, Any]] = []
    for blob in blobs:
        if not blob:
            continue
        version, width, zero_count, s, mn, mx, first, n = _HEADER.unpack_from(blob)
        if version != _VERSION:
            raise ValueError(f"unknown sketch version {version}")
        zero += zero_count
        total += s
        low = min(low, mn)
        high = max(high, mx)
        if n:
            kind = np.uint32 if width == 4 else np.uint64
            segments.append((first, np.frombuffer(blob, dtype=kind, count=n, offset=_HEADER.size)))
    if not segments:
        if zero == 0:
            return LatencySketch()
        return LatencySketch._from_dense(zero, total, low, high, 0, [])
    if len(segments) == 1:
        first, bins = segments[0]
        return LatencySketch._from_dense(zero, total, low, high, first, bins)
    lo = min(f for f, _ in segments)
    hi = max(f + len(b) for f, b in segments)
    acc = np.zeros(hi - lo, dtype=np.uint64)
    for first, bins in segments:
        acc[first - lo : first - lo + len(bins)] += bins
    return LatencySketch._from_dense(zero, total, low, high, lo, acc)
