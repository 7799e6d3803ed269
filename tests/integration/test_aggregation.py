"""Snapshots against the raw events they come from (SPEC 6, 7): exact roll-ups of any set of hours, no
averaged percentiles, daily roll-ups, late data, and the edge cases of the metric replies."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.conftest import NOW_MS, STAFF, Api, FreshServices, StatementCounter
from tests.helpers import ev, items_of
from voicemon.api import create_app
from voicemon.clock import FakeClock
from voicemon.domain.access import SYSTEM
from voicemon.domain.snapshot import SnapshotParts, merge_parts, render_parts
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.jobs import build_runner
from voicemon.service import Services
from voicemon.service.aggregate import Aggregator, parts_from_events
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.tables import snapshots

TODAY = floor_to(NOW_MS, DAY_MS)  # the day of NOW_MS (which is 02:40 UTC)
YESTERDAY = TODAY - DAY_MS  # a complete day, wholly inside raw retention (48 h back from NOW_MS)
WINDOW = YESTERDAY + 14 * HOUR_MS  # first hour of the generated traffic

STAGES = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")
COMPLETION_STAGE = {
    "transcription_completed": "transcription",
    "claims_extracted": "claims_extraction",
    "entity_resolution_completed": "entity_resolution",
    "entity_needs_disambiguation": "entity_resolution",
    "drafts_generated": "draft_generation",
}
FAILURE_STAGE = {
    "transcription_failed": "transcription",
    "claims_extraction_failed": "claims_extraction",
    "entity_resolution_failed": "entity_resolution",
    "draft_generation_failed": "draft_generation",
}
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
EMPTY_LATENCY = {"count": 0, "avg": None, "p50": None, "p95": None, "p99": None}


# --- the bare truth: metrics recomputed in plain Python from the events sent -----------------------------


@dataclass(frozen=True)
class Rec:
    """One generated event, kept in a form the recount reads directly."""

    ts: int
    type: str
    artifact: str | None
    org: str | None
    duration_ms: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.org is not None:
            fields["organization_id"] = self.org
        if self.duration_ms is not None:
            fields["duration_ms"] = self.duration_ms
        if self.meta:
            fields["metadata"] = self.meta
        return ev(self.type, self.artifact, self.ts, **fields)


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def latency_truth(values_ms: Sequence[float]) -> dict[str, Any]:
    if not values_ms:
        return dict(EMPTY_LATENCY)
    out: dict[str, Any] = {"count": len(values_ms), "avg": sum(values_ms) / len(values_ms)}
    for name, q in QUANTILES:
        out[name] = nearest_rank(values_ms, q)
    return out


def _ppb(score: float) -> int:
    return round(score * 1_000_000_000)


def _nusd(usd: float) -> int:
    return round(usd * 1_000_000_000)


def truth(
    recs: Sequence[Rec], hours: Collection[int], org: str | None
) -> tuple[dict[str, Any], dict[str, int]]:
    """The reply fields of SPEC 6.1 for the events whose hour is in ``hours`` (one organization, or all
    events when ``org`` is None), and the exact integer sums behind them."""
    chosen = [r for r in recs if floor_to(r.ts, HOUR_MS) in hours and (org is None or r.org == org)]
    received_at: dict[str, int] = {}
    for r in recs:  # an artifact's received time is its earliest artifact_received, whatever the scope
        if r.type == "artifact_received" and r.artifact is not None:
            received_at[r.artifact] = min(r.ts, received_at.get(r.artifact, r.ts))

    def count(kind: str) -> int:
        return sum(1 for r in chosen if r.type == kind)

    samples: dict[str, list[int]] = {s: [] for s in STAGES}
    completed = dict.fromkeys(STAGES, 0)
    failed = dict.fromkeys(STAGES, 0)
    for r in chosen:
        if r.type in COMPLETION_STAGE:
            completed[COMPLETION_STAGE[r.type]] += 1
            if r.duration_ms is not None:
                samples[COMPLETION_STAGE[r.type]].append(r.duration_ms)
        elif r.type in FAILURE_STAGE:
            failed[FAILURE_STAGE[r.type]] += 1
    e2e = [
        r.ts - received_at[r.artifact]
        for r in chosen
        if r.type == "artifact_completed" and r.artifact in received_at and received_at[r.artifact] <= r.ts
    ]

    def scores(kind: str) -> list[float]:
        return [r.meta["confidence_score"] for r in chosen if r.type == kind and "confidence_score" in r.meta]

    def total(kind: Collection[str], key: str) -> int:
        return sum(int(r.meta.get(key, 0)) for r in chosen if r.type in kind)

    resolved = count("entity_resolution_completed")
    ambiguous = count("entity_needs_disambiguation")
    cost_nusd = sum(_nusd(r.meta["ai_cost_usd"]) for r in chosen if "ai_cost_usd" in r.meta)
    received, done, lost = count("artifact_received"), count("artifact_completed"), count("artifact_failed")
    transcript, claim = scores("transcription_completed"), scores("claims_extracted")
    fields = {
        "artifacts_received": received,
        "artifacts_completed": done,
        "artifacts_failed": lost,
        "overall_failure_rate": lost / (done + lost) if done + lost else 0.0,
        "stages": [
            {
                "stage": s,
                "completed": completed[s],
                "failed": failed[s],
                "failure_rate": failed[s] / (completed[s] + failed[s]) if completed[s] + failed[s] else 0.0,
                "latency_ms": latency_truth(samples[s]),
            }
            for s in STAGES
        ],
        "end_to_end_latency_ms": latency_truth(e2e),
        "avg_transcript_confidence": sum(transcript) / len(transcript) if transcript else None,
        "avg_claim_confidence": sum(claim) / len(claim) if claim else None,
        "auto_resolution_rate": resolved / (resolved + ambiguous) if resolved + ambiguous else 0.0,
        "disambiguation_rate": ambiguous / (resolved + ambiguous) if resolved + ambiguous else 0.0,
        "total_claims_extracted": total({"claims_extracted"}, "claim_count"),
        "total_entities_resolved": total(
            {"entity_resolution_completed", "entity_needs_disambiguation"}, "entity_count"
        ),
        "total_drafts_generated": total({"drafts_generated"}, "draft_count"),
        "total_ai_cost_usd": cost_nusd / 1e9,
        "avg_cost_per_artifact_usd": cost_nusd / 1e9 / received if received else 0.0,
    }
    sums = {
        "cost_nusd": cost_nusd,
        "e2e_sum_us": sum(e2e) * 1000,
        "transcript_confidence_sum_ppb": sum(_ppb(s) for s in transcript),
        "claim_confidence_sum_ppb": sum(_ppb(s) for s in claim),
        **{f"{s}_sum_us": sum(samples[s]) * 1000 for s in STAGES},
    }
    return fields, sums


def assert_latency(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert got["count"] == want["count"], where
    if want["count"] == 0:
        assert got == EMPTY_LATENCY, where
        return
    assert got["avg"] == pytest.approx(want["avg"], rel=1e-12), where
    for name, _ in QUANTILES:
        assert got[name] == pytest.approx(want[name], rel=0.01), f"{where} {name}"


def assert_fields(got: dict[str, Any], want: dict[str, Any], where: str = "") -> None:
    """Counts exactly, averages and rates to float precision, percentiles within 1 %."""
    for key, expected in want.items():
        actual = got[key]
        if key == "stages":
            assert [s["stage"] for s in actual] == list(STAGES), where
            for a, e in zip(actual, expected, strict=True):
                w = f"{where} {e['stage']}"
                assert (a["completed"], a["failed"]) == (e["completed"], e["failed"]), w
                assert a["failure_rate"] == pytest.approx(e["failure_rate"], rel=1e-12, abs=0), w
                assert_latency(a["latency_ms"], e["latency_ms"], w)
        elif key == "end_to_end_latency_ms":
            assert_latency(actual, expected, f"{where} e2e")
        elif expected is None:
            assert actual is None, f"{where} {key}"
        elif isinstance(expected, int):
            assert actual == expected, f"{where} {key}"
            assert isinstance(actual, int), f"{where} {key}"
        else:
            assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15), f"{where} {key}"


def assert_sums(parts: SnapshotParts, sums: dict[str, int], where: str = "") -> None:
    got = {
        "cost_nusd": parts.cost_nusd,
        "e2e_sum_us": parts.end_to_end.sum_us,
        "transcript_confidence_sum_ppb": parts.transcript_confidence_sum_ppb,
        "claim_confidence_sum_ppb": parts.claim_confidence_sum_ppb,
        **{f"{s.value}_sum_us": p.latency.sum_us for s, p in parts.stages.items()},
    }
    assert got == sums, where


# --- generated traffic ----------------------------------------------------------------------------------

ORGS = ("org-a", "org-b", "org-c", None)
STAGE_TYPES = sorted([*COMPLETION_STAGE, *FAILURE_STAGE])
durations = st.one_of(st.integers(0, 2_000), st.integers(0, 900_000))
metadata_values = st.fixed_dictionaries(
    {},
    optional={
        "confidence_score": st.integers(0, 1000).map(lambda k: k / 1000),
        "claim_count": st.integers(0, 20),
        "entity_count": st.integers(0, 12),
        "draft_count": st.integers(0, 8),
        "ai_cost_usd": st.integers(0, 50_000).map(lambda k: k / 1_000_000),
    },
)


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[int], list[Rec]]:
    """Up to 6 complete hours of traffic: artifacts of several organizations (and none), every stage
    completion and failure type with explicit durations, artifact received/completed pairs."""
    n_hours = draw(st.integers(1, 6))
    span = n_hours * HOUR_MS
    offsets = st.integers(0, span - 1)
    recs: list[Rec] = []
    artifacts: list[tuple[str, str | None]] = []
    for i in range(draw(st.integers(0, 24))):
        aid, org = f"p{i}", draw(st.sampled_from(ORGS))
        artifacts.append((aid, org))
        received = WINDOW + draw(offsets)
        recs.append(Rec(received, "artifact_received", aid, org, meta=draw(metadata_values)))
        end = draw(st.sampled_from(("open", "artifact_completed", "artifact_failed")))
        at = received + draw(st.integers(0, 3 * HOUR_MS))
        if end != "open" and at < WINDOW + span:
            recs.append(Rec(at, end, aid, org, meta=draw(metadata_values)))
    if artifacts:
        stage_events = st.tuples(
            st.sampled_from(STAGE_TYPES),
            st.integers(0, len(artifacts) - 1),
            offsets,
            durations,
            metadata_values,
        )
        for kind, which, offset, duration, meta in draw(st.lists(stage_events, max_size=60)):
            aid, org = artifacts[which]
            recs.append(Rec(WINDOW + offset, kind, aid, org, duration, meta))
    for org, offset, cost in draw(
        st.lists(st.tuples(st.sampled_from(ORGS), offsets, metadata_values), max_size=3)
    ):
        recs.append(Rec(WINDOW + offset, "rate_limit_hit", None, org, meta=cost))
    return [WINDOW + h * HOUR_MS for h in range(n_hours)], recs


def snapshot_table(svc: Services) -> list[dict[str, Any]]:
    """Every stored snapshot row (sketches included), without computed_ms."""
    with svc.db.read() as conn:
        rows = conn.execute(select(snapshots).order_by(*snapshots.primary_key.columns))
        out = [dict(r._mapping) for r in rows]
    for row in out:
        row.pop("computed_ms")
        for key, value in row.items():
            if isinstance(value, memoryview):  # binary columns (the sketches) as PostgreSQL returns them
                row[key] = bytes(value)
    return out


def orgs_in(recs: Sequence[Rec], hours: Collection[int]) -> set[str]:
    return {r.org for r in recs if r.org is not None and floor_to(r.ts, HOUR_MS) in hours}


@asynccontextmanager
async def _no_lifespan(_: Any) -> AsyncIterator[None]:
    yield


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(generated=traffic(), data=st.data())
def test_any_rollup_equals_a_recount_of_the_raw_events(
    fresh_services: FreshServices, generated: tuple[list[int], list[Rec]], data: st.DataObject
) -> None:
    hours, recs = generated
    batch = [r.json() for r in recs]
    data.draw(st.randoms(use_true_random=False)).shuffle(batch)  # arrival order is not time order
    with fresh_services() as svc:
        result = svc.ingest_blocking(batch, STAFF)
        assert (result.accepted, result.rejected) == (len(batch), [])
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        for hour in hours:
            agg.aggregate_hour(hour)
        agg.aggregate_day(YESTERDAY)

        with svc.db.read() as conn:
            hourly = snapshot_store.load_rows(
                conn, "hourly", WINDOW, WINDOW + 6 * HOUR_MS, snapshot_store.ALL_SCOPES
            )
            daily = snapshot_store.load_rows(conn, "daily", YESTERDAY, TODAY, snapshot_store.ALL_SCOPES)
        for hour in hours:  # a platform row for every hour, an org row only where the org had events
            scopes = {r.scope for r in hourly if r.period_start_ms == hour}
            assert scopes == {"", *orgs_in(recs, {hour})}, format_time(hour)

        # Any subset of hours, merged from the stored rows, equals the recount of its events.
        subset = data.draw(st.sets(st.sampled_from(hours)), label="hours merged")
        for org in (None, *sorted(orgs_in(recs, hours))):
            rows = [r.parts for r in hourly if r.period_start_ms in subset and r.scope == (org or "")]
            merged = merge_parts(rows)
            want, sums = truth(recs, subset, org)
            assert_fields(render_parts(merged), want, f"hours {sorted(subset)} org {org}")
            assert_sums(merged, sums, f"org {org}")

        # The daily row is the same recount over the whole day (every event lies in it).
        assert {r.scope for r in daily} == {"", *orgs_in(recs, hours)}
        for row in daily:
            want, sums = truth(recs, hours, row.scope or None)
            assert_fields(render_parts(row.parts), want, f"day org {row.scope!r}")
            assert_sums(row.parts, sums, f"day org {row.scope!r}")

        # A contiguous range through the HTTP summary, platform-wide and for one organization.
        first = data.draw(st.integers(0, len(hours) - 1), label="first hour")
        last = data.draw(st.integers(first, len(hours) - 1), label="last hour")
        chosen = hours[first : last + 1]
        app = create_app(services=svc)
        app.router.lifespan_context = _no_lifespan  # the services are started and stopped here
        client = TestClient(app)
        headers = {"Authorization": f"Bearer {svc.keys.create(SYSTEM, 'staff', None, 'prop').secret}"}
        org = data.draw(st.sampled_from(ORGS), label="summary org")
        params = {"period": "hourly", "start": format_time(chosen[0]), "end": format_time(chosen[-1] + 1)}
        for scope in (None, org):
            query = params if scope is None else {**params, "organization_id": scope}
            r = client.get("/v1/metrics/summary", params=query, headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            assert ("organization_id" in body) is (scope is not None)
            assert_fields(body, truth(recs, set(chosen), scope)[0], f"summary {scope}")

        # Rerunning any aggregation changes no row.
        before = snapshot_table(svc)
        assert isinstance(svc.clock, FakeClock)
        svc.clock.advance(MINUTE_MS)
        agg.aggregate_hour(data.draw(st.sampled_from(hours), label="rerun hour"))
        agg.aggregate_day(YESTERDAY)
        assert snapshot_table(svc) == before


# --- uneven tenants --------------------------------------------------------------------------------------


def test_platform_p95_is_the_p95_of_all_samples_not_an_average(api: Api, services: Services) -> None:
    hour = YESTERDAY + 10 * HOUR_MS
    rnd = random.Random(7)
    small = [rnd.randint(100, 200) for _ in range(20)]
    big = [rnd.randint(1000, 2000) for _ in range(2000)]  # 100x the volume, 10x the latency
    batch = [
        ev("transcription_completed", f"t{org}{i}", hour + i, organization_id=org, duration_ms=d)
        for org, values in (("org-small", small), ("org-big", big))
        for i, d in enumerate(values)
    ]
    assert services.ingest_blocking(batch, STAFF).accepted == len(batch)
    run = api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(hour)})
    assert run.json()["status"] == "succeeded", run.text

    params = {"period": "hourly", "start": format_time(hour), "end": format_time(hour + HOUR_MS)}
    exact = nearest_rank(small + big, 0.95)
    (row,) = items_of(api.call("GET", "/v1/metrics/history", params=params))
    summary = api.call("GET", "/v1/metrics/summary", params=params).json()
    for body in (row, summary):
        latency = body["stages"][0]["latency_ms"]
        assert latency["count"] == 2020
        assert latency["p95"] == pytest.approx(exact, rel=0.01)

    org_p95 = {}
    for org, values in (("org-small", small), ("org-big", big)):
        body = api.call("GET", "/v1/metrics/summary", params={**params, "organization_id": org}).json()
        org_p95[org] = body["stages"][0]["latency_ms"]["p95"]
        assert org_p95[org] == pytest.approx(nearest_rank(values, 0.95), rel=0.01)
    # What the earlier system did: average the tenants' p95s. Far off on uneven tenants.
    averaged = sum(org_p95.values()) / 2
    assert abs(averaged - exact) / exact > 0.20


# --- daily roll-up ----------------------------------------------------------------------------------------


def test_a_day_is_the_merge_of_its_24_hours_and_has_rows_only_for_its_orgs(
    services: Services, clock: FakeClock
) -> None:
    agg = Aggregator(services.db, clock, services.settings)
    recs: list[Rec] = []
    rnd = random.Random(3)
    for i in range(60):  # yesterday from 14:00 on: org-a, org-b and no organization
        ts = YESTERDAY + 14 * HOUR_MS + rnd.randrange(10 * HOUR_MS)
        org = ("org-a", "org-b", None)[i % 3]
        recs.append(Rec(ts, "artifact_received", f"d{i}", org, meta={"ai_cost_usd": 0.001 * (i % 5)}))
        recs.append(Rec(ts + rnd.randrange(HOUR_MS), "artifact_completed", f"d{i}", org))
        recs.append(Rec(ts + 1, "claims_extracted", f"d{i}", org, rnd.randrange(10_000), {"claim_count": i}))
    recs = [r for r in recs if r.ts < TODAY]
    today = [Rec(TODAY + 2 * HOUR_MS + i, "artifact_received", f"c{i}", "org-c") for i in range(3)]
    result = services.ingest_blocking([r.json() for r in recs + today], STAFF)
    assert result.accepted == len(recs) + 3

    summary = agg.aggregate_day(YESTERDAY)
    assert summary["hours_redone"] == 24  # none was aggregated yet, and all are inside raw retention
    with services.db.read() as conn:
        hours = snapshot_store.load_rows(conn, "hourly", YESTERDAY, TODAY, snapshot_store.ALL_SCOPES)
        days = snapshot_store.load_rows(conn, "daily", YESTERDAY, TODAY, snapshot_store.ALL_SCOPES)
    assert {r.scope for r in days} == {"", "org-a", "org-b"}  # org-c had no event that day
    all_hours = {YESTERDAY + h * HOUR_MS for h in range(24)}
    for day in days:
        merged = merge_parts(r.parts for r in hours if r.scope == day.scope)
        assert render_parts(day.parts) == render_parts(merged)
        want, sums = truth(recs, all_hours, day.scope or None)
        assert_fields(render_parts(day.parts), want, f"day {day.scope!r}")
        assert_sums(day.parts, sums)

    clock.set(TODAY + DAY_MS + 2 * HOUR_MS)
    agg.aggregate_day(TODAY)
    with services.db.read() as conn:
        days = snapshot_store.load_rows(conn, "daily", TODAY, TODAY + DAY_MS, snapshot_store.ALL_SCOPES)
    assert {r.scope for r in days} == {"", "org-c"}
    assert [r.parts.received for r in days] == [3, 3]


# --- late data --------------------------------------------------------------------------------------------


def _summary(record: Any) -> dict[str, Any]:
    assert record.status == "succeeded", record.error
    return orjson.loads(record.summary)  # type: ignore[no-any-return]


def _received(services: Services, period: str, start: int) -> int:
    with services.db.read() as conn:
        (row,) = snapshot_store.load_rows(conn, period, start, start + 1, "")
    return row.parts.received


def test_a_late_event_redoes_exactly_its_hour_and_day(services: Services) -> None:
    late_hour, other_hour = YESTERDAY + 15 * HOUR_MS, YESTERDAY + 17 * HOUR_MS
    batch = [ev("artifact_received", f"l{i}", late_hour + i * MINUTE_MS) for i in range(3)]
    batch += [ev("artifact_received", f"o{i}", other_hour + i * MINUTE_MS) for i in range(2)]
    services.ingest_blocking(batch, STAFF)
    runner = build_runner(services)
    first = _summary(runner.run_now(STAFF, "aggregate-hourly"))
    assert len(first["aggregated"]) == 47
    # The hourly run rolls up the complete days of the hours it did: yesterday (the day before that is
    # older than hourly retention allows for a roll-up, so it waits for nothing).
    assert format_time(YESTERDAY) in first["days_redone"]
    daily = _summary(runner.run_now(STAFF, "aggregate-daily"))
    assert format_time(YESTERDAY) not in daily["aggregated"]
    assert _summary(runner.run_now(STAFF, "aggregate-hourly"))["aggregated"] == []  # nothing to redo
    assert _summary(runner.run_now(STAFF, "aggregate-daily"))["aggregated"] == []
    untouched = {r["period_start_ms"]: r for r in snapshot_table(services)}[other_hour]

    services.ingest_blocking([ev("artifact_received", "late", late_hour + 59 * MINUTE_MS)], STAFF)
    hourly = _summary(runner.run_now(STAFF, "aggregate-hourly"))
    assert (hourly["aggregated"], hourly["days_redone"]) == (
        [format_time(late_hour)],
        [format_time(YESTERDAY)],
    )
    # Hourly and daily agree as soon as the hourly run is done, not after the next daily run.
    assert (_received(services, "hourly", late_hour), _received(services, "daily", YESTERDAY)) == (4, 6)
    assert _summary(runner.run_now(STAFF, "aggregate-daily"))["aggregated"] == []
    assert {r["period_start_ms"]: r for r in snapshot_table(services)}[other_hour] == untouched

    # The daily run alone also redoes a marked hour of its day first, while its raw events are kept.
    services.ingest_blocking([ev("artifact_received", "later", other_hour + 5)], STAFF)
    day = _summary(runner.run_now(STAFF, "aggregate-daily"))
    assert (day["aggregated"], day["hours_redone"]) == ([format_time(YESTERDAY)], 1)
    assert (_received(services, "hourly", other_hour), _received(services, "daily", YESTERDAY)) == (3, 7)
    assert _summary(runner.run_now(STAFF, "aggregate-hourly"))["aggregated"] == []


# --- edge cases of the replies ----------------------------------------------------------------------------


def _get(api: Api, path: str, key: str | None = None, **params: Any) -> Any:
    r = api.call("GET", path, key, params=params)
    assert r.status_code == 200, r.text
    assert "NaN" not in r.text
    assert "Infinity" not in r.text
    return r.json()


def _range(start: int, end: int, period: str = "hourly") -> dict[str, str]:
    return {"period": period, "start": format_time(start), "end": format_time(end)}


def _assert_empty(body: dict[str, Any]) -> None:
    assert (body["artifacts_received"], body["artifacts_completed"], body["artifacts_failed"]) == (0, 0, 0)
    for key in ("overall_failure_rate", "auto_resolution_rate", "disambiguation_rate"):
        assert body[key] == 0
    for key in ("total_claims_extracted", "total_entities_resolved", "total_drafts_generated"):
        assert body[key] == 0
    assert (body["total_ai_cost_usd"], body["avg_cost_per_artifact_usd"]) == (0, 0)
    assert (body["avg_transcript_confidence"], body["avg_claim_confidence"]) == (None, None)
    assert body["end_to_end_latency_ms"] == EMPTY_LATENCY
    for stage in body["stages"]:
        assert (stage["completed"], stage["failed"], stage["failure_rate"]) == (0, 0, 0)
        assert stage["latency_ms"] == EMPTY_LATENCY


def test_an_empty_aggregated_hour_is_a_row_of_zeros_and_an_empty_range_is_zeros(api: Api) -> None:
    hour = YESTERDAY + 9 * HOUR_MS
    run = api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(hour)})
    assert run.json()["status"] == "succeeded"
    (row,) = _get(api, "/v1/metrics/history", **_range(hour, hour + HOUR_MS))["items"]
    assert "organization_id" not in row
    assert (row["period_start"], row["period_end"]) == (format_time(hour), format_time(hour + HOUR_MS))
    _assert_empty(row)
    _assert_empty(_get(api, "/v1/metrics/summary", **_range(hour, hour + HOUR_MS)))
    # A range with no rows at all (never aggregated) merges to the same zeros. (The hand run rolled up
    # the hour's day, and with it the day's other hours: the day before has none.)
    for params in (
        _range(hour - DAY_MS - 5 * HOUR_MS, hour - DAY_MS),
        _range(hour - 9 * DAY_MS, hour - 2 * DAY_MS, "daily"),
    ):
        assert _get(api, "/v1/metrics/history", **params)["items"] == []
        summary = _get(api, "/v1/metrics/summary", **params)
        assert "organization_id" not in summary
        _assert_empty(summary)
        stages = _get(api, "/v1/metrics/stages", **params)
        assert stages["end_to_end_latency_ms"] == EMPTY_LATENCY
        assert _get(api, "/v1/metrics/orgs", **params)["items"] == []


def test_history_without_an_org_has_platform_rows_only(api: Api, services: Services) -> None:
    first = YESTERDAY + 8 * HOUR_MS
    batch = [
        ev("artifact_received", f"h{i}", first + (i % 3) * HOUR_MS, organization_id=f"org-{i % 2}")
        for i in range(12)
    ]
    services.ingest_blocking(batch, STAFF)
    for h in range(3):
        api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(first + h * HOUR_MS)})
    items = _get(api, "/v1/metrics/history", **_range(first, first + 3 * HOUR_MS))["items"]
    assert [i["period_start"] for i in items] == [format_time(first + h * HOUR_MS) for h in range(3)]
    assert all("organization_id" not in i for i in items)
    assert [i["artifacts_received"] for i in items] == [4, 4, 4]
    org = _get(api, "/v1/metrics/history", organization_id="org-1", **_range(first, first + 3 * HOUR_MS))
    assert [i["organization_id"] for i in org["items"]] == ["org-1"] * 3
    assert [i["artifacts_received"] for i in org["items"]] == [2, 2, 2]
    summary = _get(api, "/v1/metrics/summary", **_range(first, first + 3 * HOUR_MS))
    assert "organization_id" not in summary
    assert summary["artifacts_received"] == 12


def test_the_orgs_breakdown_names_and_sorts_organizations(api: Api, services: Services) -> None:
    hour = YESTERDAY + 11 * HOUR_MS
    volumes = {"org-b": 5, "org-a": 5, "org-c": 9, "org-d": 1}
    batch = [
        ev("artifact_received", f"{org}-{i}", hour + i, organization_id=org)
        for org, n in volumes.items()
        for i in range(n)
    ]
    batch.append(ev("artifact_received", "no-org", hour))
    services.ingest_blocking(batch, STAFF)
    api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(hour)})
    for org, name in (("org-a", "Alpha FC"), ("org-d", "Delta United"), ("org-z", "Zeta")):
        assert api.call("PUT", f"/v1/orgs/{org}", json={"name": name}).status_code == 200
    items = _get(api, "/v1/metrics/orgs", **_range(hour, hour + HOUR_MS))["items"]
    assert [(i["organization_id"], i["organization_name"], i["artifacts_received"]) for i in items] == [
        ("org-c", "Unknown", 9),
        ("org-a", "Alpha FC", 5),
        ("org-b", "Unknown", 5),
        ("org-d", "Delta United", 1),
    ]


def test_a_scoped_viewer_sees_only_its_own_aggregates(api: Api) -> None:
    viewer = api.key("viewer", "org-a")
    params = _range(TODAY, TODAY + HOUR_MS)
    for path in ("/v1/metrics/history", "/v1/metrics/summary", "/v1/metrics/stages"):
        assert api.call("GET", path, viewer, params=params).status_code == 403, path
        assert api.call("GET", path, viewer, params={**params, "organization_id": "org-b"}).status_code == 403
        assert api.call("GET", path, viewer, params={**params, "organization_id": "org-a"}).status_code == 200
    r = api.call("GET", "/v1/metrics/orgs", viewer, params=params)
    assert r.status_code == 403
    assert set(r.json()["error"]) == {"code", "message"}


def _daily_parts(seed: int) -> SnapshotParts:
    rnd = random.Random(seed)
    parts = SnapshotParts(received=10 + seed % 7, completed=8, failed=1, cost_nusd=1_000_000 * seed)
    for _ in range(20):
        parts.end_to_end.add_us(rnd.randrange(1_000_000, 600_000_000))
        for stage in parts.stages.values():
            stage.latency.add_us(rnd.randrange(1_000, 5_000_000))
    return parts


def _write_days(services: Services, days: int, orgs: int) -> None:
    parts = {f"org-{k:02d}": _daily_parts(k) for k in range(orgs)}
    parts[""] = merge_parts(parts.values())
    with services.db.write() as conn:
        for d in range(days):
            snapshot_store.replace_period(conn, "daily", TODAY - (d + 1) * DAY_MS, parts, NOW_MS, 0)


def test_metric_queries_take_as_many_statements_for_90_days_of_30_orgs_as_for_2_of_1(
    api: Api, services: Services, sql_counter: StatementCounter
) -> None:
    params = _range(TODAY - 90 * DAY_MS, TODAY, "daily")
    calls = [
        ("/v1/metrics/history", {}),
        ("/v1/metrics/history", {"organization_id": "org-00"}),
        ("/v1/metrics/summary", {}),
        ("/v1/metrics/summary", {"organization_id": "org-00"}),
        ("/v1/metrics/stages", {}),
        ("/v1/metrics/orgs", {}),
    ]
    api.call("PUT", "/v1/orgs/org-00", json={"name": "Zero"})
    api.call("PUT", "/v1/orgs/org-07", json={"name": "Seven"})

    def measure() -> list[int]:
        counts = []
        for path, extra in calls:
            with sql_counter:
                _get(api, path, **params, **extra)
            counts.append(sql_counter.count)
        return counts

    _write_days(services, 2, 1)
    small = measure()
    assert len(_get(api, "/v1/metrics/history", **params)["items"]) == 2
    _write_days(services, 90, 30)
    large = measure()
    assert len(_get(api, "/v1/metrics/history", **params)["items"]) == 90
    orgs = _get(api, "/v1/metrics/orgs", **params)["items"]
    assert len(orgs) == 30
    assert {o["organization_id"]: o["organization_name"] for o in orgs}["org-07"] == "Seven"
    assert large == small
    assert all(n > 0 for n in small)


def test_a_counts_only_raw_read_gives_the_same_counts_and_no_latencies(services: Services) -> None:
    """What the alert evaluation's 30-minute window reads (``samples=False``)."""
    hour = floor_to(NOW_MS, HOUR_MS) - HOUR_MS
    batch = []
    for i in range(12):
        org = f"org-{i % 3}"
        aid = f"count-{i}"
        batch += [
            ev("artifact_received", aid, hour + i * 1000, organization_id=org),
            ev(
                "transcription_completed",
                aid,
                hour + i * 1000 + 500,
                organization_id=org,
                duration_ms=400 + i,
            ),
            ev(
                "artifact_completed" if i % 4 else "artifact_failed",
                aid,
                hour + i * 1000 + 900,
                organization_id=org,
            ),
        ]
    services.ingest_blocking(batch, STAFF)
    with services.db.read() as conn, conn.begin():
        full = parts_from_events(conn, hour, hour + HOUR_MS)
        counts = parts_from_events(conn, hour, hour + HOUR_MS, samples=False)
    assert set(full) == set(counts) == {"", "org-0", "org-1", "org-2"}
    for scope, parts in full.items():
        assert counts[scope].counts == parts.counts, scope
        assert all(lat.count == 0 for lat in counts[scope].latencies), scope
    assert full[""].end_to_end.count == 9
