"""Delivery does not matter: repeats and reorderings of the same events end in the same state.

The pipeline's SDK retries batches (event ids make that safe) and several workers report concurrently, so
voicemon sees events duplicated and out of order. Whatever the delivery, the stored events, the realtime
counters and the artifact summaries must be those of the distinct events sent once, in time order.

Generated events have distinct timestamps per artifact (so the SPEC 4 tie rule, which depends on arrival,
never applies) and every completion or failure carries its own ``duration_ms`` (a duration paired with a
``*_started`` event depends on whether that event "was seen" first, by the SPEC's own rule 3.4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.conftest import NOW_MS, STAFF, FreshServices
from voicemon.domain.records import EventFilter
from voicemon.domain.timeutil import MINUTE_MS, format_time
from voicemon.service import Services
from voicemon.storage.events import count_events

ORGS = ("o1", "o2")
STAGE_TYPES = (
    "transcription_started",
    "transcription_completed",
    "transcription_failed",
    "claims_extraction_started",
    "claims_extracted",
    "claims_extraction_failed",
    "entity_resolution_started",
    "entity_resolution_completed",
    "entity_needs_disambiguation",
    "entity_resolution_failed",
    "draft_generation_started",
    "drafts_generated",
    "draft_generation_failed",
)
ARTIFACT_TYPES = (
    "artifact_received",
    "artifact_completed",
    "artifact_failed",
    "artifact_status_changed",
    *STAGE_TYPES,
    "draft_confirmed",
    "draft_rejected",
    "rate_limit_hit",
)
SYSTEM_TYPES = ("circuit_breaker_opened", "circuit_breaker_closed", "budget_exceeded")
TIMED = {t for t in STAGE_TYPES if not t.endswith("_started")}
STATUSES = ("received", "transcribing", "transcribed", "processing", "completed", "failed")

# Most events inside the realtime window, some before it (up to 2 h ago), a few in the next minutes.
TS_OFFSETS = st.integers(min_value=-120 * MINUTE_MS, max_value=2 * MINUTE_MS)


@st.composite
def artifact_events(draw: st.DrawFn, index: int) -> list[dict[str, Any]]:
    artifact = f"art-{index}"
    org = draw(st.sampled_from(ORGS))
    note = f"vn-{index}"
    channel = draw(st.sampled_from(("app", "whatsapp", None)))
    times = sorted(draw(st.sets(TS_OFFSETS, min_size=1, max_size=10)))
    out: list[dict[str, Any]] = []
    for k, offset in enumerate(times):
        kind = draw(st.sampled_from(ARTIFACT_TYPES))
        e: dict[str, Any] = {
            "event_id": f"{artifact}-{k}",
            "event_type": kind,
            "artifact_id": artifact,
            "timestamp": format_time(NOW_MS + offset),
        }
        # Identity fields are the artifact's own, but not every event repeats them.
        if draw(st.booleans()):
            e["organization_id"] = org
        if draw(st.booleans()):
            e["voice_note_id"] = note
        meta: dict[str, Any] = {}
        if channel is not None and draw(st.booleans()):
            meta["source_channel"] = channel
        if draw(st.booleans()):
            meta["ai_cost_usd"] = draw(st.sampled_from((0.001, 0.0125, 0.3)))
        if meta:
            e["metadata"] = meta
        if kind in TIMED:
            e["duration_ms"] = draw(st.integers(min_value=0, max_value=60_000))
        if kind == "artifact_status_changed":
            e["new_status"] = draw(st.sampled_from(STATUSES))
        if kind.endswith("_failed"):
            e["error_code"] = draw(st.sampled_from(("timeout", "llm_error")))
            e["error_message"] = f"{kind} at {k}"
        if kind in ("artifact_failed", "artifact_completed", "rate_limit_hit") and draw(st.booleans()):
            e["pipeline_stage"] = draw(st.sampled_from(("transcription", "draft_generation")))
        out.append(e)
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Distinct events, and a delivery plan: batches of indices covering every event at least once."""
    count = draw(st.integers(min_value=1, max_value=4))
    events = [e for i in range(count) for e in draw(artifact_events(i))]
    for j in range(draw(st.integers(min_value=0, max_value=2))):
        events.append(
            {
                "event_id": f"sys-{j}",
                "event_type": draw(st.sampled_from(SYSTEM_TYPES)),
                "timestamp": format_time(NOW_MS + draw(TS_OFFSETS)),
                **({"organization_id": draw(st.sampled_from(ORGS))} if draw(st.booleans()) else {}),
            }
        )
    order = list(draw(st.permutations(range(len(events)))))
    repeats = draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    for r in repeats:
        order.insert(draw(st.integers(0, len(order))), r)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=5)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    return events, [b for b in batches if b]


def state_of(svc: Services) -> dict[str, Any]:
    """Everything a user can observe of the stored data, in a comparable form."""
    with svc.db.read() as conn:
        stored = count_events(conn)
    events = svc.queries.list_events(STAFF, EventFilter(), None, 500).items
    artifacts = svc.queries.list_artifacts(STAFF, None, None, None, 500).items
    realtime = {
        scope: dataclasses.asdict(svc.queries.realtime(STAFF, scope)) for scope in (None, *ORGS, "nobody")
    }
    return {
        "event_count": stored,
        # Sorted by id: the list breaks timestamp ties across artifacts by arrival.
        "events": sorted(
            (s.event.event_id, repr(dataclasses.replace(s.event, received_ms=0))) for s in events
        ),
        "artifacts": [(dataclasses.asdict(a), stuck) for a, stuck in artifacts],
        "realtime": realtime,
    }


def deliver(svc: Services, events: Sequence[dict[str, Any]], plan: Sequence[Sequence[int]]) -> None:
    for batch in plan:
        result = svc.ingest_blocking([events[i] for i in batch], STAFF)
        assert result.rejected == [], result.rejected


def _differences(got: list[Any], expected: list[Any]) -> list[str]:
    """The fields that differ, per artifact: a readable failure instead of a truncated repr."""
    out = [f"{len(got)} artifacts, expected {len(expected)}"]
    for (g, g_stuck), (e, e_stuck) in zip(got, expected, strict=False):
        fields = {k: (g[k], e[k]) for k in e if g.get(k) != e[k]}
        if g_stuck != e_stuck:
            fields["stuck"] = (g_stuck, e_stuck)
        if fields:
            out.append(f"{e['artifact_id']}: {fields}")
    return out


def _ts(e: dict[str, Any]) -> str:
    return str(e["timestamp"])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_any_delivery_ends_in_the_state_of_the_distinct_events_in_order(
    fresh_services: FreshServices, scenario: tuple[list[dict[str, Any]], list[list[int]]]
) -> None:
    events, plan = scenario
    in_time_order = sorted(range(len(events)), key=lambda i: (_ts(events[i]), i))
    note(f"events: {events}")
    note(f"plan: {plan}")
    with fresh_services() as svc:
        deliver(svc, events, [in_time_order])
        expected = state_of(svc)
    with fresh_services() as svc:
        deliver(svc, events, plan)
        got = state_of(svc)
        # Sending all of it again changes nothing either.
        replay = svc.ingest_blocking(events, STAFF)
        assert (replay.accepted, replay.duplicates) == (0, len(events))
        again = state_of(svc)
    assert expected["event_count"] == len(events)
    assert got["event_count"] == expected["event_count"]
    assert got["realtime"] == expected["realtime"]
    assert got["artifacts"] == expected["artifacts"], _differences(got["artifacts"], expected["artifacts"])
    assert got["events"] == expected["events"]
    assert again == got


def test_the_generator_reaches_the_interesting_cases() -> None:
    """The property above is only as good as its inputs: out-of-order, repeated, older-than-window."""
    seen = {"reordered": False, "repeated": False, "old": False, "multi_batch": False}

    @settings(max_examples=60, deadline=None, database=None)
    @given(scenario=scenarios())
    def look(scenario: tuple[list[dict[str, Any]], list[list[int]]]) -> None:
        events, plan = scenario
        flat = [i for b in plan for i in b]
        assert set(flat) == set(range(len(events)))
        arrival_ts = [_ts(events[i]) for i in flat]
        seen["reordered"] |= arrival_ts != sorted(arrival_ts)
        seen["repeated"] |= len(flat) > len(set(flat))
        seen["old"] |= any(_ts(e) < format_time(NOW_MS - 60 * MINUTE_MS) for e in events)
        seen["multi_batch"] |= len(plan) > 1
        assert len({e["event_id"] for e in events}) == len(events)
        per_artifact: dict[str, list[str]] = {}
        for e in events:
            if "artifact_id" in e:
                per_artifact.setdefault(e["artifact_id"], []).append(_ts(e))
        assert all(len(v) == len(set(v)) for v in per_artifact.values())

    look()
    assert all(seen.values()), seen
