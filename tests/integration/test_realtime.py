"""Realtime counters (SPEC 5) against a recount, in Python, of the raw events that were sent.

The window is the 60 minutes ending now at minute granularity: from the start of the minute 59 minutes
before the current one, up to now. Counters are kept per minute at ingestion; the reply must equal a
recount of the sent events whose timestamp lies in ``[floor_minute(now) - 59 min, now]``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import NOW_MS, Api, StatementCounter
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, SECOND_MS, floor_to, format_time, parse_time

ORGS = ("org-a", "org-b", "org-c")
STAGE_FAILURES = (
    "transcription_failed",
    "claims_extraction_failed",
    "entity_resolution_failed",
    "draft_generation_failed",
)
ALL_TYPES = (
    "artifact_received",
    "artifact_status_changed",
    "artifact_completed",
    "artifact_failed",
    "transcription_started",
    "transcription_completed",
    *STAGE_FAILURES,
    "claims_extraction_started",
    "claims_extracted",
    "entity_resolution_started",
    "entity_resolution_completed",
    "entity_needs_disambiguation",
    "draft_generation_started",
    "drafts_generated",
    "draft_confirmed",
    "draft_rejected",
    "circuit_breaker_opened",
    "circuit_breaker_closed",
    # (retry_initiated, retry_succeeded and retry_failed are voicemon's own: refused at ingest)
    "budget_threshold_reached",
    "budget_exceeded",
    "rate_limit_hit",
)
SYSTEM = {"circuit_breaker_opened", "circuit_breaker_closed", "budget_threshold_reached", "budget_exceeded"}
SYSTEM |= {"rate_limit_hit"}

# SPEC 5, written out: which events each counter counts.
COUNTED: dict[str, Callable[[dict[str, Any]], bool]] = {
    "artifacts_received": lambda e: e["event_type"] == "artifact_received",
    "artifacts_completed": lambda e: e["event_type"] == "artifact_completed",
    "artifacts_failed": lambda e: e["event_type"] == "artifact_failed",
    "transcriptions_completed": lambda e: e["event_type"] == "transcription_completed",
    "claims_extracted": lambda e: e["event_type"] == "claims_extracted",
    "entities_resolved": lambda e: (
        e["event_type"] in ("entity_resolution_completed", "entity_needs_disambiguation")
    ),
    "drafts_generated": lambda e: e["event_type"] == "drafts_generated",
    "failures": lambda e: e["event_type"] in (*STAGE_FAILURES, "artifact_failed"),
}


def window(now_ms: int) -> tuple[int, int]:
    return floor_to(now_ms, MINUTE_MS) - 59 * MINUTE_MS, now_ms


def recount(sent: list[dict[str, Any]], now_ms: int, org: str | None) -> dict[str, Any]:
    start, end = window(now_ms)
    chosen = [
        e
        for e in sent
        if start <= parse_time(e["timestamp"]) <= end and (org is None or e.get("organization_id") == org)
    ]
    counts: dict[str, Any] = {name: sum(1 for e in chosen if rule(e)) for name, rule in COUNTED.items()}
    nano = sum(round(e.get("metadata", {}).get("ai_cost_usd", 0) * 1e9) for e in chosen)
    counts["ai_cost_usd"] = nano / 1e9
    return counts


def realtime(api: Api, org: str | None = None) -> dict[str, Any]:
    path = "/v1/metrics/realtime" + (f"?organization_id={org}" if org else "")
    r = api.call("GET", path)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def traffic(seed: int, count: int, now_ms: int) -> list[dict[str, Any]]:
    """Every event type, spread over the 2 hours before now, with orgs, no org, and costs."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = ALL_TYPES[i % len(ALL_TYPES)] if i < len(ALL_TYPES) * 2 else rng.choice(ALL_TYPES)
        ts = now_ms - rng.randrange(0, 2 * HOUR_MS)
        fields: dict[str, Any] = {}
        org = rng.choice((*ORGS, None))
        if org is not None:
            fields["organization_id"] = org
        if kind == "artifact_status_changed":
            fields["new_status"] = "processing"
        if rng.random() < 0.5:
            fields["metadata"] = {"ai_cost_usd": rng.choice((0.000001, 0.0025, 0.013, 0.2, 1.75))}
        artifact = None if kind in SYSTEM and rng.random() < 0.5 else f"rt-{rng.randrange(40)}"
        out.append(ev(kind, artifact, ts, **fields))
    return out


def post(api: Api, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 97):
        r = api.call("POST", "/v1/events", json={"events": events[i : i + 97]})
        assert r.status_code == 200, r.text
        assert r.json()["rejected"] == [], r.json()["rejected"][:3]


def assert_matches(got: dict[str, Any], want: dict[str, Any]) -> None:
    counts = dict(got["counts"])
    cost = counts.pop("ai_cost_usd")
    wanted = dict(want)
    wanted_cost = wanted.pop("ai_cost_usd")
    assert counts == wanted
    assert cost == pytest.approx(wanted_cost, rel=1e-12, abs=1e-12)
    completed, failed = want["artifacts_completed"], want["artifacts_failed"]
    expected_rate = failed / (completed + failed) if completed + failed else 0
    assert got["failure_rate"] == pytest.approx(expected_rate, rel=1e-12)


def test_counts_equal_a_recount_of_the_events_in_the_window(api: Api, clock: FakeClock) -> None:
    clock.set(NOW_MS + 25 * SECOND_MS)  # mid-minute: the window starts at a minute, ends at now
    now = clock.now_ms()
    sent = traffic(seed=1, count=900, now_ms=now)
    post(api, sent)
    inside = recount(sent, now, None)
    # The traffic has events of every counter inside the window, and events before it that must not count.
    assert all(inside[name] > 0 for name in COUNTED)
    assert inside["failures"] > inside["artifacts_failed"]
    assert inside["artifacts_received"] < sum(e["event_type"] == "artifact_received" for e in sent)
    platform = realtime(api)
    assert_matches(platform, inside)
    start, end = window(now)
    assert (platform["window_start"], platform["window_end"]) == (format_time(start), format_time(end))
    assert "organization_id" not in platform
    for org in ORGS:
        body = realtime(api, org)
        assert body["organization_id"] == org
        assert_matches(body, recount(sent, now, org))
    assert_matches(realtime(api, "org-never-seen"), recount([], now, None))


def test_the_window_moves_with_the_clock(api: Api, clock: FakeClock) -> None:
    sent = traffic(seed=2, count=400, now_ms=NOW_MS)
    post(api, sent)
    for step in (0, 30 * SECOND_MS, 7 * MINUTE_MS, 31 * MINUTE_MS, 59 * MINUTE_MS + 59 * SECOND_MS):
        clock.set(NOW_MS + step)
        assert_matches(realtime(api), recount(sent, clock.now_ms(), None))
        assert_matches(realtime(api, "org-b"), recount(sent, clock.now_ms(), "org-b"))


def test_window_edges_are_exact(api: Api, clock: FakeClock) -> None:
    clock.set(NOW_MS + 42 * SECOND_MS)
    start, _ = window(clock.now_ms())
    edge = [
        ev("artifact_received", "e1", start, organization_id="org-a"),  # first ms of the window: in
        ev("artifact_received", "e2", start - 1, organization_id="org-a"),  # last ms before it: out
        ev("artifact_completed", "e3", clock.now_ms(), organization_id="org-a"),  # now: in
        ev("artifact_failed", "e4", start - HOUR_MS, organization_id="org-a"),  # an hour before: out
    ]
    post(api, edge)
    body = realtime(api, "org-a")
    assert body["counts"]["artifacts_received"] == 1
    assert body["counts"]["artifacts_completed"] == 1
    assert body["counts"]["artifacts_failed"] == 0
    assert body["failure_rate"] == 0
    assert_matches(body, recount(edge, clock.now_ms(), "org-a"))


def test_an_event_a_little_in_the_future_counts_once_its_minute_is_in_the_window(
    api: Api, clock: FakeClock
) -> None:
    ahead = ev("artifact_failed", "f1", NOW_MS + 3 * MINUTE_MS, organization_id="org-a")
    post(api, [ahead])
    assert realtime(api)["counts"]["artifacts_failed"] == 0
    clock.set(NOW_MS + 3 * MINUTE_MS)
    assert realtime(api)["counts"]["artifacts_failed"] == 1
    assert realtime(api, "org-a")["failure_rate"] == 1


def test_a_quiet_window_reads_zero(api: Api, clock: FakeClock) -> None:
    sent = traffic(seed=3, count=300, now_ms=NOW_MS)
    post(api, sent)
    assert realtime(api)["counts"]["artifacts_received"] > 0
    clock.advance(2 * HOUR_MS)
    for org in (None, *ORGS):
        body = realtime(api, org)
        assert set(body["counts"]) == {*COUNTED, "ai_cost_usd"}
        assert all(value == 0 for value in body["counts"].values()), body
        assert body["failure_rate"] == 0
        assert ("organization_id" in body) is (org is not None)


def test_failure_rate_is_failed_over_completed_plus_failed(api: Api) -> None:
    t = NOW_MS - 5 * MINUTE_MS
    events = [ev("artifact_completed", f"c{i}", t, organization_id="org-a") for i in range(3)]
    events += [ev("artifact_failed", f"f{i}", t, organization_id="org-a") for i in range(1)]
    # Stage failures are failures, but not failed artifacts: they do not enter the rate.
    events += [ev("transcription_failed", f"s{i}", t, organization_id="org-a") for i in range(5)]
    events += [ev("artifact_failed", "b1", t, organization_id="org-b")]
    post(api, events)
    a = realtime(api, "org-a")
    assert (a["counts"]["artifacts_completed"], a["counts"]["artifacts_failed"], a["counts"]["failures"]) == (
        3,
        1,
        6,
    )
    assert a["failure_rate"] == 0.25
    assert realtime(api, "org-b")["failure_rate"] == 1
    assert realtime(api)["failure_rate"] == 2 / 5
    assert realtime(api, "org-c")["failure_rate"] == 0


def test_duplicates_and_rejections_are_not_counted(api: Api) -> None:
    t = NOW_MS - MINUTE_MS
    good = [ev("artifact_received", f"d{i}", t, organization_id="org-a") for i in range(4)]
    post(api, good)
    post(api, good[:2])
    r = api.call("POST", "/v1/events", json={"events": [ev("artifact_received", "bad", t, extra_field=1)]})
    assert r.json()["accepted"] == 0
    assert realtime(api)["counts"]["artifacts_received"] == 4
    assert realtime(api, "org-a")["counts"]["artifacts_received"] == 4


def test_reading_the_window_does_not_scan_raw_events(api: Api, sql_counter: StatementCounter) -> None:
    post(api, traffic(seed=4, count=200, now_ms=NOW_MS))
    with sql_counter:
        realtime(api)
        realtime(api, "org-a")
    reads = [s for s in sql_counter.statements if "minute_counters" in s]
    assert len(reads) == 2
    assert not [s for s in sql_counter.statements if "FROM events" in s]
