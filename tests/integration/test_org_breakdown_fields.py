"""The organization breakdown reads only the parts of its fields, merged by the rule of every merge: any
choice of declared reply fields, read per organization from storage, renders as the same fields of the
organization's rows merged by ``merge_parts``."""

from __future__ import annotations

import random

import pytest

from tests.conftest import NOW_MS, STAFF
from voicemon.domain.periods import Cover, Period
from voicemon.domain.snapshot import Latency, SnapshotParts, merge_parts, render_fields, render_parts
from voicemon.domain.snapshot_fields import ORG_BREAKDOWN, STAGE_BREAKDOWN
from voicemon.domain.snapshot_layout import COUNT_SLOTS, LATENCY_SLOTS, reads
from voicemon.domain.timeutil import DAY_MS, floor_to
from voicemon.service import Services
from voicemon.service.aggregate import Aggregator, write_period
from voicemon.service.metrics import Range
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.snapshots import ALL_SCOPES

TODAY = floor_to(NOW_MS, DAY_MS)
FIRST = TODAY - 20 * DAY_MS
ORGS = ("org-a", "org-b", "org-c")
EVERY_FIELD = tuple(render_parts(SnapshotParts()))


def random_parts(rnd: random.Random) -> SnapshotParts:
    """Every part set: counts, and each latency with a few samples (or none)."""
    latencies = []
    for _ in LATENCY_SLOTS:
        latency = Latency()
        samples = [rnd.randrange(1_000, 900_000_000) for _ in range(rnd.choice([0, 1, 5]))]
        if samples:
            latency.add_many_us(samples)
        latencies.append(latency)
    return SnapshotParts.of([rnd.randrange(10**6) for _ in COUNT_SLOTS], latencies)


def write_days(svc: Services) -> None:
    rnd = random.Random(19)
    for d in range(20):
        parts = {org: random_parts(rnd) for org in ORGS if rnd.random() < 0.8}
        parts[""] = merge_parts(parts.values())
        with svc.db.write() as conn:
            write_period(conn, Period.DAILY, FIRST + d * DAY_MS, parts, NOW_MS, 0)


@pytest.mark.parametrize(
    "fields",
    [ORG_BREAKDOWN, STAGE_BREAKDOWN, EVERY_FIELD, ("avg_claim_confidence", "stages")],
    ids=["org_breakdown", "stage_breakdown", "every_field", "some"],
)
def test_any_fields_read_per_organization_equal_the_merge_of_its_rows(
    services: Services, fields: tuple[str, ...]
) -> None:
    write_days(services)
    cover = Cover((), ((FIRST, TODAY),))
    with services.db.read() as conn:
        totals = snapshot_store.org_totals(conn, Period.DAILY.value, cover, reads(fields))
        rows = snapshot_store.load_rows(conn, Period.DAILY.value, FIRST, TODAY, ALL_SCOPES)
    truth = {
        org: merge_parts(r.parts for r in rows if r.scope == org) for org in {r.scope for r in rows} - {""}
    }
    assert {t.scope for t in totals} == set(truth)
    for t in totals:
        assert render_fields(t.parts, fields) == render_fields(truth[t.scope], fields), t.scope


def test_the_breakdown_through_day_blocks_equals_the_merge_of_the_days(services: Services) -> None:
    write_days(services)
    Aggregator(services.db, services.clock, services.settings).rebuild_blocks()
    items = services.metrics.by_organization(STAFF, Range(Period.DAILY, FIRST, TODAY)).items
    with services.db.read() as conn:
        rows = snapshot_store.load_rows(conn, Period.DAILY.value, FIRST, TODAY, ALL_SCOPES)
    for item in items:
        want = merge_parts(r.parts for r in rows if r.scope == item.organization_id)
        assert render_fields(item.parts, ORG_BREAKDOWN) == render_fields(want, ORG_BREAKDOWN)
    order = [(-i.parts.received, i.organization_id) for i in items]
    assert order == sorted(order)
    assert len(items) == len(ORGS)
