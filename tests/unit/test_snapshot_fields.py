"""The snapshot fields are declared once, and the declaration drives everything (SPEC 6.1, 6.2).

For every declared part: parts with only that part set survive the stored form and map to its columns,
merge by its rule (associative, commutative, the empty parts as identity), are added up by the hourly
aggregation from its declared source, and render under the declared reply name; the ``snapshots`` table
and the reply models are made of the declared columns and fields.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, LargeBinary

from voicemon.api.schemas import OrgMetricsOut, SnapshotOut, StagesOut
from voicemon.domain.aggregation import TypeGroup, build_parts
from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.model import MEASURED_STAGES, EventType
from voicemon.domain.snapshot import (
    Latency,
    SnapshotParts,
    from_columns,
    merge_parts,
    render_fields,
    render_parts,
    to_columns,
)
from voicemon.domain.snapshot_fields import (
    FIELDS,
    ORG_BREAKDOWN,
    STAGE_BREAKDOWN,
    Count,
    Derived,
    Measure,
    Sketched,
    Source,
    StageGroup,
    of,
)
from voicemon.domain.snapshot_layout import (
    ALL_SLOTS,
    COUNT_SLOTS,
    GROUPS,
    LATENCY_SLOTS,
    SNAPSHOT_COLUMNS,
    CountSlot,
    LatencySlot,
    Slot,
    expand,
    reads,
)
from voicemon.storage.tables import snapshots

SLOTS = [pytest.param(s, id=f"{s.stage or 'snapshot'}.{s.name}") for s in ALL_SLOTS]
KEY_COLUMNS = ["period_type", "period_start_ms", "scope", "computed_ms"]

samples_us = st.lists(st.integers(0, 900_000_000), max_size=8)
# One value per slot: an integer for a count, latency samples (µs) for a latency.
slot_values = st.tuples(
    st.lists(st.integers(0, 10**12), min_size=len(COUNT_SLOTS), max_size=len(COUNT_SLOTS)),
    st.lists(samples_us, min_size=len(LATENCY_SLOTS), max_size=len(LATENCY_SLOTS)),
)


def only(slot: Slot, seed: int = 1) -> SnapshotParts:
    """Parts with nothing but ``slot`` set (to a value that depends on ``seed``)."""
    p = SnapshotParts()
    if isinstance(slot, CountSlot):
        p.counts[slot.index] = 1000 + seed
    else:
        rnd = random.Random(seed)
        p.latencies[slot.index].add_many_us([rnd.randrange(1_000, 90_000_000) for _ in range(5 + seed)])
    return p


def parts_of(values: tuple[list[int], list[list[int]]]) -> SnapshotParts:
    counts, latencies = values
    p = SnapshotParts.of(list(counts), [Latency() for _ in LATENCY_SLOTS])
    for latency, samples in zip(p.latencies, latencies, strict=True):
        if samples:
            latency.add_many_us(samples)
    return p


def state(p: SnapshotParts) -> tuple[list[int], list[tuple[int, int, Any]]]:
    """What parts answer with: every count, and each latency's count, sum and rendering."""
    return p.counts, [(x.count, x.sum_us, x.render()) for x in p.latencies]


def reply_path(slot: Slot) -> tuple[Any, ...] | None:
    """Where a part is shown as is (a count) or as a latency block in a rendered reply; None if not."""
    entries = FIELDS if slot.group is None else GROUPS[slot.group].fields
    reply = next(e.reply for e in entries if isinstance(e, Count | Sketched) and e.name == slot.name)
    if reply is None or slot.group is None or slot.stage is None:
        return None if reply is None else (reply,)
    group = GROUPS[slot.group]
    return (group.reply, group.stages.index(slot.stage), reply)


def at(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


# --- the stored form and the table --------------------------------------------------------------------


@pytest.mark.parametrize("slot", SLOTS)
def test_a_part_alone_survives_its_stored_form(slot: Slot) -> None:
    p = only(slot)
    columns = to_columns(p)
    assert set(columns) == {c.name for c in SNAPSHOT_COLUMNS}
    back = from_columns(columns)
    assert state(back) == state(p)
    if isinstance(slot, CountSlot):
        assert columns[slot.column] == p.counts[slot.index]
        assert [c for c, v in columns.items() if isinstance(v, int) and v] == [slot.column]
    else:
        assert (columns[slot.count_column], columns[slot.sum_column]) == (
            p.latencies[slot.index].count,
            p.latencies[slot.index].sum_us,
        )
        assert [c for c, v in columns.items() if isinstance(v, int) and v] == [
            slot.count_column,
            slot.sum_column,
        ]
        others = [x for i, x in enumerate(back.latencies) if i != slot.index]
        assert all(x.count == 0 and x.sketch.count == 0 for x in others)
        assert back.latencies[slot.index].sketch.count == p.latencies[slot.index].count


@given(slot_values)
@settings(max_examples=40, deadline=None)
def test_any_parts_survive_their_stored_form(values: tuple[list[int], list[list[int]]]) -> None:
    p = parts_of(values)
    assert state(from_columns(to_columns(p))) == state(p)


def test_the_table_is_made_of_the_declared_columns() -> None:
    declared = [(c.name, LargeBinary if c.binary else BigInteger) for c in SNAPSHOT_COLUMNS]
    table = [(c.name, type(c.type)) for c in snapshots.columns if c.name not in KEY_COLUMNS]
    assert table == declared
    assert all(not c.nullable for c in snapshots.columns)
    # Every part has its columns, and no two parts share one.
    owned = [c for s in COUNT_SLOTS for c in [s.column]]
    owned += [c for s in LATENCY_SLOTS for c in (s.count_column, s.sum_column)]
    assert sorted(owned) == sorted(c.name for c in SNAPSHOT_COLUMNS if not c.binary)
    assert {s.sketch_column for s in LATENCY_SLOTS} == {c.name for c in SNAPSHOT_COLUMNS if c.binary}


# --- merging ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", SLOTS)
def test_a_part_alone_merges_by_its_rule(slot: Slot) -> None:
    a, b = only(slot, 1), only(slot, 2)
    merged = merge_parts([a, b])
    if isinstance(slot, CountSlot):
        assert merged.counts[slot.index] == a.counts[slot.index] + b.counts[slot.index]
    else:
        x, y, m = (p.latencies[slot.index] for p in (a, b, merged))
        assert (m.count, m.sum_us, m.sketch.count) == (x.count + y.count, x.sum_us + y.sum_us, m.count)
        assert m.render() == merged_one_by_one(x, y).render()
    alone = state(only(slot, 3))
    others = [i for i in range(len(COUNT_SLOTS)) if not (isinstance(slot, CountSlot) and i == slot.index)]
    assert all(merged.counts[i] == 0 for i in others)
    latencies = [
        i for i in range(len(LATENCY_SLOTS)) if not (isinstance(slot, LatencySlot) and i == slot.index)
    ]
    assert all(merged.latencies[i].count == 0 for i in latencies)
    assert state(merge_parts([only(slot, 3), SnapshotParts()])) == alone


def merged_one_by_one(*latencies: Latency) -> Latency:
    out = Latency()
    for x in latencies:
        out.merge(x)
    return out


@given(slot_values, slot_values, slot_values)
@settings(max_examples=40, deadline=None)
def test_merge_is_associative_and_commutative_with_empty_as_identity(
    a: tuple[list[int], list[list[int]]],
    b: tuple[list[int], list[list[int]]],
    c: tuple[list[int], list[list[int]]],
) -> None:
    def m(*values: SnapshotParts) -> SnapshotParts:
        return merge_parts(values)

    x, y, z = parts_of(a), parts_of(b), parts_of(c)
    want = state(m(x, y, z))
    assert state(m(m(x, y), z)) == want
    assert state(m(x, m(y, z))) == want
    assert state(m(z, y, x)) == want
    assert state(m(x, SnapshotParts())) == state(x) == state(m(x))
    assert state(merge_parts([])) == state(SnapshotParts())
    pairwise = parts_of(a)
    pairwise.merge(parts_of(b))
    pairwise.merge(parts_of(c))
    assert state(pairwise) == want


# --- rendering ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", SLOTS)
def test_a_part_alone_renders_under_its_reply_name(slot: Slot) -> None:
    p = only(slot)
    body = render_parts(p)
    path = reply_path(slot)
    if path is not None:
        if isinstance(slot, CountSlot):
            assert at(body, path) == p.counts[slot.index]
        else:
            assert at(body, path) == p.latencies[slot.index].render()
            assert at(body, path)["count"] == p.latencies[slot.index].count > 0
    # Everything else renders as for empty parts, but what derives from this part.
    empty = render_parts(SnapshotParts())
    changed = {k for k in body if body[k] != empty[k]}
    if slot.group is not None:
        assert changed == {GROUPS[slot.group].reply}
        return
    derived = {e.reply for e in FIELDS if isinstance(e, Derived) and slot.name in e.inputs}
    shown = set() if path is None else {path[0]}
    assert shown <= changed <= shown | derived


@pytest.mark.parametrize("slot", SLOTS)
def test_a_part_is_the_attribute_of_its_name(slot: Slot) -> None:
    p = SnapshotParts()
    value: Any = 42 if isinstance(slot, CountSlot) else Latency(3, 4)
    holder: Any = p if slot.stage is None else getattr(p, GROUPS[slot.group or ""].name)[slot.stage]
    setattr(holder, slot.name, value)
    assert getattr(holder, slot.name) is value
    stored = p.counts if isinstance(slot, CountSlot) else p.latencies
    assert stored[slot.index] is value
    if slot.stage is None:
        assert getattr(SnapshotParts(**{slot.name: value}), slot.name) is value
    with pytest.raises(AttributeError):
        getattr(holder, slot.name + "_x")


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.reply) for e in FIELDS if isinstance(e, Derived)])
def test_a_derived_field_is_computed_from_its_inputs(entry: Derived) -> None:
    rnd = random.Random(entry.reply)
    for _ in range(20):
        p = SnapshotParts(**{name: rnd.choice([0, 1, rnd.randrange(10**9)]) for name in entry.inputs})
        got = render_parts(p)[entry.reply]
        assert got == entry.compute(*(getattr(p, name) for name in entry.inputs))
        assert got is not None or entry.nullable
        assert got is None or math.isfinite(got)


@given(slot_values)
@settings(max_examples=40, deadline=None)
def test_replies_never_hold_nan_and_subsets_are_the_same_fields(
    values: tuple[list[int], list[list[int]]],
) -> None:
    p = parts_of(values)
    body = render_parts(p)
    json.dumps(body, allow_nan=False)
    assert list(body) == [e.reply for e in FIELDS if e.reply is not None]
    for subset in (ORG_BREAKDOWN, STAGE_BREAKDOWN):
        assert render_fields(p, subset) == {k: body[k] for k in subset}
        assert list(render_fields(p, subset)) == list(subset)
    # The parts a subset reads are enough to render it: nothing else is read.
    wanted = reads(ORG_BREAKDOWN)
    partial = SnapshotParts()
    for s in wanted.counts:
        partial.counts[s.index] = p.counts[s.index]
    for t in wanted.latencies:
        partial.latencies[t.index] = p.latencies[t.index]
    assert render_fields(partial, ORG_BREAKDOWN) == render_fields(p, ORG_BREAKDOWN)


def test_empty_parts_render_zeros_and_nulls() -> None:
    body = render_parts(SnapshotParts())
    for e in FIELDS:
        if isinstance(e, Derived):
            assert body[e.reply] == (None if e.nullable else 0.0), e.reply
        elif isinstance(e, Count) and e.reply:
            assert body[e.reply] == 0
        elif isinstance(e, Sketched) and e.reply:
            assert body[e.reply] == {"count": 0, "avg": None, "p50": None, "p95": None, "p99": None}
    assert [s["stage"] for s in body["stages"]] == [s.value for s in MEASURED_STAGES]


def test_the_reply_models_are_the_declared_fields() -> None:
    rnd = random.Random(7)
    p = parts_of(
        (
            [rnd.randrange(100) for _ in COUNT_SLOTS],
            [[rnd.randrange(1, 10**8) for _ in range(3)] for _ in LATENCY_SLOTS],
        )
    )
    body = render_parts(p)
    head = ["period_type", "period_start", "period_end", "organization_id", "computed_at"]
    assert list(SnapshotOut.model_fields) == head + list(body)
    assert list(StagesOut.model_fields) == [*STAGE_BREAKDOWN, "coverage"]
    assert list(OrgMetricsOut.model_fields) == ["organization_id", "organization_name", *ORG_BREAKDOWN]
    reply = {
        "period_type": "hourly",
        "period_start": "x",
        "period_end": "y",
        "organization_id": "org",
        "computed_at": "z",
        **body,
    }
    assert SnapshotOut.model_validate(reply).model_dump() == reply
    empty = {**reply, **render_parts(SnapshotParts())}
    assert SnapshotOut.model_validate(empty).model_dump() == empty


# --- the hourly aggregation ---------------------------------------------------------------------------


def group(event_type: EventType, org: str | None, durations: list[int]) -> TypeGroup:
    totals = {m: 10 * (i + 1) + 1 for i, m in enumerate(Measure)}
    return TypeGroup(org, event_type, totals, np.array(durations, dtype=np.int64))


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_each_part_adds_up_its_declared_source(event_type: EventType) -> None:
    g = group(event_type, "org-a", [1_000, 2_000, 4_000])
    parts = build_parts([g], [("org-a", np.array([7_000], dtype=np.int64))])
    assert set(parts) == {PLATFORM_SCOPE, "org-a"}
    for p in parts.values():
        for s in COUNT_SLOTS:
            counted = s.types is None or event_type in s.types
            assert p.counts[s.index] == (g.totals[s.measure] if counted else 0), s
        for t in LATENCY_SLOTS:
            latency = p.latencies[t.index]
            if t.types is None:
                assert (latency.count, latency.sum_us) == (1, 7_000), t
            elif event_type in t.types:
                assert (latency.count, latency.sum_us) == (3, 7_000), t
            else:
                assert latency.count == 0, t


def test_an_hour_without_events_has_a_platform_row_of_zeros() -> None:
    parts = build_parts([], [])
    assert list(parts) == [PLATFORM_SCOPE]
    assert state(parts[PLATFORM_SCOPE]) == state(SnapshotParts())


# --- the declaration is checked ---------------------------------------------------------------------------


def test_a_new_field_is_one_entry() -> None:
    """A declaration with one more count gets its column, its slot, its merge and its reply field."""
    extra = Count("retries", of(Measure.EVENTS, EventType.RETRY_INITIATED), reply="total_retries")
    layout = expand((*FIELDS, extra))
    assert [c.name for c in layout.columns if not c.binary][-1] == "retries"
    assert layout.top["retries"] == CountSlot(
        len(COUNT_SLOTS),
        "retries",
        None,
        None,
        "retries",
        Measure.EVENTS,
        frozenset({EventType.RETRY_INITIATED}),
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (Count("received", Source(Measure.EVENTS)), "part 'received'"),
        (Count("other", Source(Measure.EVENTS), column="cost_nusd"), "column 'cost_nusd'"),
        (Count("other", Source(Measure.EVENTS), reply="artifacts_received"), "reply field"),
        (Derived("rate", ("received", "nothing"), lambda a, b: 0.0), "'nothing'"),
    ],
)
def test_a_declaration_that_names_something_twice_or_reads_nothing_is_refused(
    extra: Count | Derived, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        expand((*FIELDS, extra))


def test_a_stage_member_reads_only_its_stage() -> None:
    group = next(e for e in FIELDS if isinstance(e, StageGroup))
    broken = replace(group, fields=(*group.fields, Derived("share", ("received",), lambda a: 0.0)))
    with pytest.raises(ValueError, match="'received'"):
        expand(tuple(broken if e is group else e for e in FIELDS))
    stage_latency = [s for s in LATENCY_SLOTS if s.group == group.name]
    assert [s.stage for s in stage_latency] == list(group.stages)
    assert [s.packed_at for s in stage_latency] == list(range(len(group.stages)))
    assert all(isinstance(s, LatencySlot) and s.sketch_column == group.sketch_column for s in stage_latency)
