"""Snapshot math (SPEC 6): additive parts, the one merge function, the stored form, and the reply fields.

A snapshot is stored as *parts* that add up: counts, exact integer sums, and latency sketches. Everything
derived (rates, averages, percentiles) is computed from parts when a reply is rendered. Merging hours into
a day, or days into a range, is :func:`merge_parts`; no rate or percentile is ever averaged.

Which parts there are, and how each one is stored and shown, is declared once in
:mod:`voicemon.domain.snapshot_fields`; nothing here names a field.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from voicemon.domain.sketch import LatencySketch, merge_encoded_groups
from voicemon.domain.snapshot_fields import Count, Derived, Entry, Sketched, StageGroup
from voicemon.domain.snapshot_layout import (
    COUNT_SLOTS,
    GROUPS,
    LATENCY_SLOTS,
    PACKED_COLUMNS,
    REPLY_ENTRIES,
    STAGE_SCOPES,
    TOP_LEVEL,
    CountSlot,
    Slot,
)

US_PER_MS = 1000
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


class Latency:
    """Latency samples: exact count and sum (µs), and a sketch for percentiles.

    A latency read from storage keeps its sketch encoded until someone needs it, so that merging many
    rows adds their bins as arrays (:meth:`merge_columns`) instead of decoding each one.
    """

    __slots__ = ("_blob", "_sketch", "count", "sum_us")

    def __init__(self, count: int = 0, sum_us: int = 0, blob: bytes | None = None) -> None:
        self.count = count
        self.sum_us = sum_us
        self._blob = blob
        self._sketch: LatencySketch | None = None

    @property
    def sketch(self) -> LatencySketch:
        if self._sketch is None:
            self._sketch = LatencySketch.from_bytes(self._blob)
            self._blob = None
        return self._sketch

    @sketch.setter
    def sketch(self, value: LatencySketch) -> None:
        self._sketch = value
        self._blob = None

    def encoded(self) -> bytes:
        if self._sketch is None:
            return self._blob or b""
        return self._sketch.to_bytes()

    def add_us(self, value_us: int) -> None:
        self.count += 1
        self.sum_us += value_us
        self.sketch.add(value_us / US_PER_MS)

    def add_many_us(self, values_us: Sequence[int] | NDArray[np.int64]) -> None:
        array = np.asarray(values_us, dtype=np.int64)
        self.count += len(array)
        self.sum_us += int(array.sum())
        self.sketch.add_many(array / US_PER_MS)

    def merge(self, other: Latency) -> None:
        self.count += other.count
        self.sum_us += other.sum_us
        self.sketch.merge(other.sketch)

    @classmethod
    def merge_columns(cls, columns: Sequence[Sequence[Latency]]) -> list[Latency]:
        """Merge each column of latencies into one; all their sketches are merged in one pass
        (:func:`~voicemon.domain.sketch.merge_encoded_groups`), still encoded."""
        blobs = [lat.encoded() for column in columns for lat in column]
        groups = [i for i, column in enumerate(columns) for _ in column]
        sketches = merge_encoded_groups(blobs, groups, len(columns))
        out = []
        for column, sketch in zip(columns, sketches, strict=True):
            merged = cls(sum(lat.count for lat in column), sum(lat.sum_us for lat in column))
            merged.sketch = sketch
            out.append(merged)
        return out

    def render(self) -> dict[str, Any]:
        """``{count, avg, p50, p95, p99}`` in ms; null means "no samples", never NaN."""
        if self.count == 0:
            return {"count": 0, "avg": None, "p50": None, "p95": None, "p99": None}
        out: dict[str, Any] = {"count": self.count, "avg": self.sum_us / self.count / US_PER_MS}
        values = self.sketch.quantiles([q for _, q in QUANTILES])
        for (name, _), value in zip(QUANTILES, values, strict=True):
            out[name] = value
        return out


def _get(parts: SnapshotParts, slot: Slot) -> Any:
    return parts.counts[slot.index] if isinstance(slot, CountSlot) else parts.latencies[slot.index]


def _set(parts: SnapshotParts, slot: Slot, value: Any) -> None:
    if isinstance(slot, CountSlot):
        parts.counts[slot.index] = value
    else:
        parts.latencies[slot.index] = value


class StageParts:
    """The parts of one stage of a stage group, read and written in the snapshot's own lists."""

    __slots__ = ("_parts", "_scope")

    _parts: SnapshotParts
    _scope: Mapping[str, Slot]

    def __init__(self, parts: SnapshotParts, scope: Mapping[str, Slot]) -> None:
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_scope", scope)

    def _slot(self, name: str) -> Slot:
        found = self._scope.get(name) if not name.startswith("_") else None
        if found is None:
            raise AttributeError(f"a stage has no part {name!r}")
        return found

    def __getattr__(self, name: str) -> Any:
        return _get(self._parts, self._slot(name))

    def __setattr__(self, name: str, value: Any) -> None:
        _set(self._parts, self._slot(name), value)


_ATTRIBUTES: dict[str, Slot | StageGroup] = {**TOP_LEVEL, **GROUPS}


class SnapshotParts:
    """The additive content of one snapshot row (one period, one scope).

    ``counts[i]`` is the value of ``COUNT_SLOTS[i]`` and ``latencies[j]`` that of ``LATENCY_SLOTS[j]``
    (:mod:`~voicemon.domain.snapshot_layout`). Each declared part is also an attribute, by its name, and
    a stage group a dict with one object per stage:

    >>> from voicemon.domain.model import Stage
    >>> p = SnapshotParts(received=3, completed=2)
    >>> p.stages[Stage.TRANSCRIPTION].failed = 1
    >>> p.end_to_end.add_us(1500)
    >>> out = render_parts(p)
    >>> out["artifacts_received"], out["stages"][0]["failure_rate"], out["end_to_end_latency_ms"]["avg"]
    (3, 1.0, 1.5)
    """

    __slots__ = ("counts", "latencies")

    counts: list[int]
    latencies: list[Latency]

    def __init__(self, **parts: Any) -> None:
        object.__setattr__(self, "counts", [0] * len(COUNT_SLOTS))
        object.__setattr__(self, "latencies", [Latency() for _ in LATENCY_SLOTS])
        for name, value in parts.items():
            setattr(self, name, value)

    @classmethod
    def of(cls, counts: list[int], latencies: list[Latency]) -> SnapshotParts:
        """Parts holding these lists (not copied), in slot order."""
        parts = object.__new__(cls)
        object.__setattr__(parts, "counts", counts)
        object.__setattr__(parts, "latencies", latencies)
        return parts

    def __getattr__(self, name: str) -> Any:
        # Called only for what the class itself lacks: the declared parts.
        found = _ATTRIBUTES.get(name)
        if found is None:
            raise AttributeError(f"a snapshot has no part {name!r}")
        if isinstance(found, StageGroup):
            return {s: StageParts(self, STAGE_SCOPES[(found.name, s)]) for s in found.stages}
        return _get(self, found)

    def __setattr__(self, name: str, value: Any) -> None:
        found = _ATTRIBUTES.get(name)
        if found is None or isinstance(found, StageGroup):
            object.__setattr__(self, name, value)
        else:
            _set(self, found, value)

    def __repr__(self) -> str:
        counts = [f"{s.key}={v}" for s, v in zip(COUNT_SLOTS, self.counts, strict=True) if v]
        latencies = [
            f"{s.key}=<{x.count} samples>"
            for s, x in zip(LATENCY_SLOTS, self.latencies, strict=True)
            if x.count
        ]
        return f"SnapshotParts({', '.join(counts + latencies)})"

    def merge(self, other: SnapshotParts) -> None:
        """Add ``other`` into this one: counts and sums add, sketches merge."""
        self.counts[:] = map(operator.add, self.counts, other.counts)
        for mine, theirs in zip(self.latencies, other.latencies, strict=True):
            mine.merge(theirs)


_CLASHES = {*_ATTRIBUTES} & {*dir(SnapshotParts)} | {
    name
    for scope in STAGE_SCOPES.values()
    for name in scope
    if name.startswith("_") or name in dir(StageParts)
}
if _CLASHES:
    raise ValueError(f"snapshot fields: {sorted(_CLASHES)} cannot be attribute names")


def merge_parts(parts: Iterable[SnapshotParts]) -> SnapshotParts:
    """The one merge: serves the daily roll-up, the blocks and every range query. Counts and sums add;
    each latency's sketches merge at once, still encoded (:meth:`Latency.merge_columns`)."""
    group = list(parts)
    if group:
        counts = [sum(column) for column in zip(*(p.counts for p in group), strict=True)]
    else:
        counts = [0] * len(COUNT_SLOTS)
    latencies = Latency.merge_columns([[p.latencies[i] for p in group] for i in range(len(LATENCY_SLOTS))])
    return SnapshotParts.of(counts, latencies)


# --- the reply fields (SPEC 6.1) ------------------------------------------------------------------------

# Rendering runs for every row of a history and every organization of a breakdown, so the renderer of a
# choice of fields is written once from the declaration, as the code one would write by hand (the way
# ``dataclasses`` writes ``__init__``): a dict display of ``c[i]``, ``lat[i].render()`` and calls of the
# derived fields' functions.


def _expression(entry: Entry, scope: Mapping[str, Slot], functions: dict[str, Any]) -> str:
    if isinstance(entry, Count):
        return f"c[{scope[entry.name].index}]"
    if isinstance(entry, Sketched):
        return f"lat[{scope[entry.name].index}].render()"
    if isinstance(entry, Derived):
        name = f"_derived_{len(functions)}"
        functions[name] = entry.compute
        inputs = (scope[n] for n in entry.inputs)
        args = ", ".join(f"c[{s.index}]" if isinstance(s, CountSlot) else f"lat[{s.index}]" for s in inputs)
        return f"{name}({args})"
    items = []
    for stage in entry.stages:
        fields = [e for e in entry.fields if e.reply is not None]
        inner = _display(fields, STAGE_SCOPES[(entry.name, stage)], functions)
        items.append(f"{{{entry.item_key!r}: {stage.value!r}, {inner[1:]}")
    return f"[{', '.join(items)}]"


def _display(entries: Iterable[Entry], scope: Mapping[str, Slot], functions: dict[str, Any]) -> str:
    pairs = (f"{e.reply!r}: {_expression(e, scope, functions)}" for e in entries)
    return f"{{{', '.join(pairs)}}}"


@functools.cache
def _renderer(names: tuple[str, ...]) -> Callable[[SnapshotParts], dict[str, Any]]:
    """The function that renders these reply fields, in this order. Raises KeyError for a name that is
    not a reply field."""
    functions: dict[str, Any] = {}
    body = _display((REPLY_ENTRIES[n] for n in names), TOP_LEVEL, functions)
    source = f"def render(p):\n    c, lat = p.counts, p.latencies\n    return {body}\n"
    exec(source, functions)  # the source holds only names and indexes of the declaration
    render: Callable[[SnapshotParts], dict[str, Any]] = functions["render"]
    return render


_RENDER_ALL = _renderer(tuple(REPLY_ENTRIES))


def render_parts(p: SnapshotParts) -> dict[str, Any]:
    """The metric fields of SPEC 6.1 (everything but the period and scope fields), in declaration order."""
    return _RENDER_ALL(p)


def render_fields(p: SnapshotParts, names: Sequence[str]) -> dict[str, Any]:
    """Some of the fields of :func:`render_parts`, in the order given; each one the same as there."""
    return _renderer(tuple(names))(p)


# --- the stored form ------------------------------------------------------------------------------------

_COUNT_COLUMNS = tuple(s.column for s in COUNT_SLOTS)


def to_columns(p: SnapshotParts) -> dict[str, int | bytes]:
    """The value of every column of :data:`~voicemon.domain.snapshot_layout.SNAPSHOT_COLUMNS`."""
    out: dict[str, int | bytes] = dict(zip(_COUNT_COLUMNS, p.counts, strict=True))
    packs: dict[str, list[bytes]] = {column: [] for column in PACKED_COLUMNS}
    for slot, latency in zip(LATENCY_SLOTS, p.latencies, strict=True):
        out[slot.count_column] = latency.count
        out[slot.sum_column] = latency.sum_us
        if slot.packed_at is None:
            out[slot.sketch_column] = latency.encoded()
        else:
            packs[slot.sketch_column].append(latency.encoded())
    for column, blobs in packs.items():
        out[column] = pack_sketches(blobs)
    return out


def from_columns(values: Mapping[Any, Any]) -> SnapshotParts:
    """Parts from their stored form (:func:`to_columns`). Sketches stay encoded until they are needed."""
    packs = {column: unpack_sketches(bytes(values[column])) for column in PACKED_COLUMNS}
    latencies = []
    for slot in LATENCY_SLOTS:
        if slot.packed_at is None:
            blob = bytes(values[slot.sketch_column])
        else:
            blobs = packs[slot.sketch_column]
            blob = blobs[slot.packed_at] if slot.packed_at < len(blobs) else b""
        latencies.append(Latency(values[slot.count_column], values[slot.sum_column], blob or None))
    return SnapshotParts.of([values[c] for c in _COUNT_COLUMNS], latencies)


def pack_sketches(blobs: Sequence[bytes]) -> bytes:
    """Several encoded sketches in one value: each one after its length (4 bytes, little-endian)."""
    out = bytearray()
    for blob in blobs:
        out += len(blob).to_bytes(4, "little") + blob
    return bytes(out)


def unpack_sketches(data: bytes) -> list[bytes]:
    """The sketches of :func:`pack_sketches`, in order.

    >>> unpack_sketches(pack_sketches([b"ab", b"", b"c"]))
    [b'ab', b'', b'c']
    """
    blobs: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        blobs.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return blobs
