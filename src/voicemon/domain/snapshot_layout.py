"""The declared snapshot fields (:mod:`~voicemon.domain.snapshot_fields`) expanded into *slots*.

A slot is one additive value: a :class:`~voicemon.domain.snapshot_fields.Count` or
:class:`~voicemon.domain.snapshot_fields.Sketched` entry, once per stage inside a stage group. Slots are
numbered in declaration order, counts and latencies apart: ``SnapshotParts.counts[i]`` holds count slot
``i``. The ``snapshots`` columns follow the same order, the sketches last.

The expansion (:func:`expand`) runs at import, and refuses a declaration that names a part, a column or a
reply field twice, or whose derived field reads a part that is not beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from voicemon.domain.model import STAGE_OF_TYPE, EventType, Stage
from voicemon.domain.snapshot_fields import (
    FIELDS,
    Count,
    Derived,
    Durations,
    Entry,
    Measure,
    Sketched,
    StageGroup,
)


@dataclass(frozen=True, slots=True)
class CountSlot:
    """One additive integer: ``SnapshotParts.counts[index]``. ``stage`` is None outside a stage group;
    ``types`` are the event types whose ``measure`` it adds up (None: every type)."""

    index: int
    name: str
    group: str | None
    stage: Stage | None
    column: str
    measure: Measure
    types: frozenset[EventType] | None

    @property
    def key(self) -> str:
        """``name``, or ``<stage>.<name>`` in a stage group."""
        return self.name if self.stage is None else f"{self.stage.value}.{self.name}"


@dataclass(frozen=True, slots=True)
class LatencySlot:
    """One latency: ``SnapshotParts.latencies[index]``. Its sketch is the whole of ``sketch_column``, or
    item ``packed_at`` of the sketches packed there. ``types`` are the event types whose durations are
    its samples (None: the end-to-end times)."""

    index: int
    name: str
    group: str | None
    stage: Stage | None
    count_column: str
    sum_column: str
    sketch_column: str
    packed_at: int | None
    types: frozenset[EventType] | None

    @property
    def key(self) -> str:
        """``name``, or ``<stage>.<name>`` in a stage group."""
        return self.name if self.stage is None else f"{self.stage.value}.{self.name}"


Slot = CountSlot | LatencySlot


@dataclass(frozen=True, slots=True)
class StoredColumn:
    """A column of the ``snapshots`` table: BIGINT, or binary (sketches)."""

    name: str
    binary: bool


def _types_of(types: frozenset[EventType] | None, stage: Stage | None) -> frozenset[EventType] | None:
    if types is None or stage is None:
        return types
    return frozenset(t for t in types if STAGE_OF_TYPE[t] is stage)


class _Builder:
    """Numbers the slots and lists the columns, in declaration order."""

    def __init__(self) -> None:
        self.counts: list[CountSlot] = []
        self.latencies: list[LatencySlot] = []
        self.integer_columns: list[str] = []
        self.binary_columns: list[str] = []
        self.packs: dict[str, int] = {}

    def add(self, m: Count | Sketched, group: StageGroup | None, stage: Stage | None) -> Slot:
        column = m.column or m.name
        if stage is not None:
            column = f"{stage.value}_{column}"
        group_name = group.name if group else None
        if isinstance(m, Count):
            count = CountSlot(
                len(self.counts),
                m.name,
                group_name,
                stage,
                column,
                m.source.measure,
                _types_of(m.source.types, stage),
            )
            self.counts.append(count)
            self.integer_columns.append(column)
            return count
        if group is None:
            sketch_column, packed_at = f"{column}_sketch", None
            self.binary_columns.append(sketch_column)
        else:
            sketch_column, packed_at = group.sketch_column, self.packs.get(group.sketch_column, 0)
            self.packs[sketch_column] = packed_at + 1
            if packed_at == 0:
                self.binary_columns.append(sketch_column)
        latency = LatencySlot(
            len(self.latencies),
            m.name,
            group_name,
            stage,
            f"{column}_count",
            f"{column}_sum_us",
            sketch_column,
            packed_at,
            _types_of(m.samples.types if isinstance(m.samples, Durations) else None, stage),
        )
        self.latencies.append(latency)
        self.integer_columns += [latency.count_column, latency.sum_column]
        return latency


def _refuse_twice(what: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"snapshot fields: {what} {name!r} is declared twice")
        seen.add(name)


def _check_inputs(members: Iterable[Entry], scope: Mapping[str, Slot]) -> None:
    for m in members:
        missing = [n for n in m.inputs if n not in scope] if isinstance(m, Derived) else []
        if missing:
            raise ValueError(f"snapshot fields: {m.reply!r} reads {missing}, which are not parts beside it")


@dataclass(frozen=True, slots=True)
class Layout:
    """A declaration expanded: its slots, the columns that store them, and the parts of each scope by name
    (the snapshot's, and each stage's of each group)."""

    counts: tuple[CountSlot, ...]
    latencies: tuple[LatencySlot, ...]
    columns: tuple[StoredColumn, ...]
    packs: Mapping[str, int]
    top: Mapping[str, Slot]
    stage_scopes: Mapping[tuple[str, Stage], Mapping[str, Slot]]


def expand(fields: tuple[Entry, ...]) -> Layout:
    """Slots in declaration order, a stage group's in its place, stage by stage. A part's name is its
    attribute, so it is unique in its scope. Raises ValueError for a declaration that names a part, a
    column or a reply field twice, or whose derived field reads a part that is not beside it."""
    builder = _Builder()
    top: dict[str, Slot] = {}
    stage_scopes: dict[tuple[str, Stage], dict[str, Slot]] = {}
    for entry in fields:
        if isinstance(entry, StageGroup):
            members = [m for m in entry.fields if not isinstance(m, Derived)]
            _refuse_twice("part", (m.name for m in members))
            _refuse_twice("reply field", (entry.item_key, *(m.reply for m in entry.fields if m.reply)))
            for stage in entry.stages:
                scope = {m.name: builder.add(m, entry, stage) for m in members}
                _check_inputs(entry.fields, scope)
                stage_scopes[(entry.name, stage)] = scope
        elif not isinstance(entry, Derived):
            top[entry.name] = builder.add(entry, None, None)
    _check_inputs(fields, top)
    _refuse_twice("part", (e.name for e in fields if not isinstance(e, Derived)))
    _refuse_twice("column", [*builder.integer_columns, *builder.binary_columns])
    _refuse_twice("reply field", (e.reply for e in fields if e.reply is not None))
    return Layout(
        tuple(builder.counts),
        tuple(builder.latencies),
        (
            *(StoredColumn(name, binary=False) for name in builder.integer_columns),
            *(StoredColumn(name, binary=True) for name in builder.binary_columns),
        ),
        dict(builder.packs),
        top,
        stage_scopes,
    )


LAYOUT = expand(FIELDS)
COUNT_SLOTS = LAYOUT.counts
LATENCY_SLOTS = LAYOUT.latencies
ALL_SLOTS: tuple[Slot, ...] = (*COUNT_SLOTS, *LATENCY_SLOTS)
TOP_LEVEL = LAYOUT.top
STAGE_SCOPES = LAYOUT.stage_scopes
GROUPS: dict[str, StageGroup] = {e.name: e for e in FIELDS if isinstance(e, StageGroup)}

# The snapshot columns besides the key (period type, period start, scope) and computed_ms.
SNAPSHOT_COLUMNS = LAYOUT.columns

# The columns holding several sketches, and how many each.
PACKED_COLUMNS = LAYOUT.packs

# The event types whose durations are latency samples of some slot.
SAMPLED_TYPES: frozenset[EventType] = frozenset(t for s in LATENCY_SLOTS if s.types for t in s.types)

REPLY_ENTRIES: dict[str, Entry] = {e.reply: e for e in FIELDS if e.reply is not None}


@dataclass(frozen=True, slots=True)
class Reads:
    """The parts a choice of reply fields reads, in slot order, and the columns that hold them."""

    counts: tuple[CountSlot, ...]
    latencies: tuple[LatencySlot, ...]

    @property
    def integer_columns(self) -> tuple[str, ...]:
        """The count columns, then the count and sum columns of each latency."""
        return (
            *(s.column for s in self.counts),
            *(c for s in self.latencies for c in (s.count_column, s.sum_column)),
        )

    @property
    def sketch_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.sketch_column for s in self.latencies))


def reads(reply_names: Iterable[str]) -> Reads:
    """The parts that rendering the named reply fields reads.

    >>> r = reads(["overall_failure_rate", "end_to_end_latency_ms"])
    >>> [s.name for s in r.counts], [s.name for s in r.latencies], r.sketch_columns
    (['completed', 'failed'], ['end_to_end'], ('e2e_sketch',))
    """
    wanted: set[Slot] = set()
    for name in reply_names:
        entry = REPLY_ENTRIES.get(name)
        if entry is None:
            raise KeyError(f"{name!r} is not a reply field of a snapshot")
        if isinstance(entry, Derived):
            wanted.update(TOP_LEVEL[n] for n in entry.inputs)
        elif isinstance(entry, StageGroup):
            wanted.update(s for s in ALL_SLOTS if s.group == entry.name)
        else:
            wanted.add(TOP_LEVEL[entry.name])
    return Reads(
        tuple(s for s in COUNT_SLOTS if s in wanted),
        tuple(s for s in LATENCY_SLOTS if s in wanted),
    )
