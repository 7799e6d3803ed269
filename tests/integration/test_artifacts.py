"""Artifact state (SPEC 4) and durations (SPEC 3.4) through ingestion and ``/v1/artifacts``.

The expected status is worked out here from a table of the SPEC's transitions, independently of the code's
state machine: the status implied by the status-changing event with the latest timestamp, ties going to
the later arrival.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import MINUTE_MS, SECOND_MS, format_time, parse_time
from voicemon.service import Services
from voicemon.settings import Settings

T0 = NOW_MS - 30 * MINUTE_MS

# SPEC 4 transitions, written out by hand. None: the type leaves the status alone.
STATUS_OF: dict[str, str | None] = {
    "artifact_received": "received",
    "transcription_started": "transcribing",
    "transcription_completed": "transcribed",
    "transcription_failed": "failed",
    "claims_extraction_started": "processing",
    "claims_extracted": "processing",
    "claims_extraction_failed": "failed",
    "entity_resolution_started": "processing",
    "entity_resolution_completed": "processing",
    "entity_resolution_failed": "failed",
    "entity_needs_disambiguation": "processing",
    "draft_generation_started": "processing",
    "drafts_generated": "processing",
    "draft_generation_failed": "failed",
    "artifact_completed": "completed",
    "artifact_failed": "failed",
    "draft_confirmed": None,
    "draft_rejected": None,
    "circuit_breaker_opened": None,
    "rate_limit_hit": None,
    "budget_exceeded": None,
}


def expected_status(arrivals: list[dict[str, Any]]) -> str | None:
    """The status implied by the status-changing event with the latest timestamp; ties: later arrival."""
    best: tuple[int, int] | None = None
    status: str | None = None
    for order, e in enumerate(arrivals):
        implied = e.get("new_status") if e["event_type"] == "artifact_status_changed" else None
        implied = implied or STATUS_OF[e["event_type"]]
        if implied is None:
            continue
        key = (_ms(e), order)
        if best is None or key > best:
            best, status = key, implied
    return status


def _ms(e: dict[str, Any]) -> int:
    return parse_time(e["timestamp"])


def post(api: Api, *events: dict[str, Any]) -> None:
    r = api.call("POST", "/v1/events", json={"events": list(events)})
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [], r.json()


def detail(api: Api, artifact_id: str) -> dict[str, Any]:
    r = api.call("GET", f"/v1/artifacts/{artifact_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def listed(api: Api, query: str = "") -> list[str]:
    return [a["artifact_id"] for a in items_of(api.call("GET", f"/v1/artifacts?limit=500{query}"))]


def pipeline_run(artifact: str, start_ms: int = T0, org: str = "o1") -> list[dict[str, Any]]:
    """One artifact through every stage, 10 s apart, in timestamp order."""
    kinds = [
        "artifact_received",
        "transcription_started",
        "transcription_completed",
        "claims_extraction_started",
        "claims_extracted",
        "entity_resolution_started",
        "entity_resolution_completed",
        "draft_generation_started",
        "drafts_generated",
        "artifact_completed",
        "draft_confirmed",
    ]
    return [
        ev(kind, artifact, start_ms + i * 10 * SECOND_MS, organization_id=org) for i, kind in enumerate(kinds)
    ]


# --- status, in order and shuffled ------------------------------------------------------------------


def test_in_order_run_walks_through_every_status(api: Api) -> None:
    run = pipeline_run("in-order")
    run[0]["voice_note_id"] = "vn-1"
    run[0]["coach_user_id"] = "coach-1"
    run[0]["metadata"] = {"source_channel": "whatsapp"}
    run[2]["metadata"] = {"ai_cost_usd": 0.25}
    run[4]["metadata"] = {"ai_cost_usd": 0.125}
    seen = []
    for e in run:
        post(api, e)
        d = detail(api, "in-order")
        seen.append((d["status"], d["current_stage"]))
    assert seen == [
        ("received", "ingestion"),
        ("transcribing", "transcription"),
        ("transcribed", "transcription"),
        ("processing", "claims_extraction"),
        ("processing", "claims_extraction"),
        ("processing", "entity_resolution"),
        ("processing", "entity_resolution"),
        ("processing", "draft_generation"),
        ("processing", "draft_generation"),
        ("completed", "draft_generation"),
        ("completed", "draft_generation"),  # a confirmation leaves the status alone
    ]
    d = detail(api, "in-order")
    assert d["organization_id"] == "o1"
    assert (d["voice_note_id"], d["coach_user_id"], d["source_channel"]) == ("vn-1", "coach-1", "whatsapp")
    assert d["received_at"] == run[0]["timestamp"]
    assert d["completed_at"] == run[9]["timestamp"]
    assert d["last_event_at"] == run[-1]["timestamp"]
    assert d["event_count"] == len(run)
    assert d["total_ai_cost_usd"] == pytest.approx(0.375, abs=1e-12)
    assert d["failed_stage"] is None
    assert d["stuck"] is False


def _orders(events: list[dict[str, Any]], count: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    yield list(events)
    yield list(reversed(events))
    for _ in range(count):
        shuffled = list(events)
        rng.shuffle(shuffled)
        yield shuffled


@pytest.mark.parametrize(
    "kinds",
    [
        # completed, then a late confirmation
        [
            "artifact_received",
            "transcription_started",
            "transcription_completed",
            "claims_extracted",
            "artifact_completed",
            "draft_confirmed",
        ],
        # stops while processing
        [
            "artifact_received",
            "transcription_started",
            "transcription_completed",
            "entity_resolution_started",
        ],
        # fails in draft generation
        [
            "artifact_received",
            "transcription_completed",
            "claims_extracted",
            "draft_generation_started",
            "draft_generation_failed",
            "rate_limit_hit",
        ],
        # a failure, then a recovery that completes
        [
            "artifact_received",
            "transcription_started",
            "transcription_failed",
            "transcription_started",
            "transcription_completed",
            "artifact_completed",
        ],
    ],
)
def test_shuffled_deliveries_end_in_the_latest_events_status(api: Api, kinds: list[str]) -> None:
    for n, order in enumerate(_orders(list(range(len(kinds))), 6, seed=len(kinds))):
        artifact = f"shuffle-{n}"
        events = [ev(kinds[i], artifact, T0 + i * SECOND_MS, organization_id="o1") for i in range(len(kinds))]
        arrivals = [events[i] for i in order]
        # one request per event: every arrival is its own transaction
        for e in arrivals:
            post(api, e)
        d = detail(api, artifact)
        assert d["status"] == expected_status(events), (order, d)
        assert d["event_count"] == len(kinds)
        assert d["last_event_at"] == events[-1]["timestamp"]
        assert d["received_at"] == events[0]["timestamp"]
        if "artifact_completed" in kinds:
            assert d["completed_at"] == events[kinds.index("artifact_completed")]["timestamp"]


def test_shuffled_inside_one_batch_is_the_same_as_one_by_one(api: Api) -> None:
    kinds = [
        "artifact_received",
        "transcription_started",
        "transcription_completed",
        "claims_extraction_started",
    ]
    for n, order in enumerate(itertools.permutations(range(len(kinds)))):
        artifact = f"batch-{n}"
        events = [ev(kinds[i], artifact, T0 + i * SECOND_MS) for i in range(len(kinds))]
        post(api, *[events[i] for i in order])
        d = detail(api, artifact)
        assert (d["status"], d["current_stage"]) == ("processing", "claims_extraction"), order


def test_an_older_event_arriving_late_does_not_undo_the_state(api: Api) -> None:
    post(api, ev("artifact_received", "late", T0), ev("artifact_completed", "late", T0 + 60 * SECOND_MS))
    post(api, ev("transcription_started", "late", T0 + 10 * SECOND_MS))
    post(api, ev("claims_extraction_failed", "late", T0 + 20 * SECOND_MS, error_code="llm"))
    d = detail(api, "late")
    assert d["status"] == "completed"
    assert d["failed_stage"] is None
    assert d["event_count"] == 4
    assert d["last_event_at"] == format_time(T0 + 60 * SECOND_MS)


def test_timestamp_ties_go_to_the_later_arrival(api: Api) -> None:
    t = T0 + 5 * SECOND_MS
    first = [ev("transcription_completed", "tie-1", t), ev("artifact_failed", "tie-1", t)]
    post(api, first[0])
    post(api, first[1])
    assert detail(api, "tie-1")["status"] == "failed"

    second = [ev("artifact_failed", "tie-2", t), ev("transcription_completed", "tie-2", t)]
    post(api, second[0])
    post(api, second[1])
    assert detail(api, "tie-2")["status"] == "transcribed"

    # inside one batch, arrival order is the order of the items
    post(api, ev("artifact_completed", "tie-3", t), ev("transcription_started", "tie-3", t))
    assert detail(api, "tie-3")["status"] == "transcribing"
    post(api, ev("transcription_started", "tie-4", t), ev("artifact_completed", "tie-4", t))
    assert detail(api, "tie-4")["status"] == "completed"


def test_status_changed_sets_its_new_status_by_time_too(api: Api) -> None:
    post(api, ev("artifact_received", "sc", T0))
    post(api, ev("artifact_status_changed", "sc", T0 + 30 * SECOND_MS, new_status="completed"))
    assert detail(api, "sc")["status"] == "completed"
    post(api, ev("transcription_started", "sc", T0 + 10 * SECOND_MS))  # older: ignored for status
    assert detail(api, "sc")["status"] == "completed"
    post(api, ev("artifact_status_changed", "sc", T0 + 40 * SECOND_MS, new_status="processing"))
    assert detail(api, "sc")["status"] == "processing"
    # system and confirmation events never change it, whatever their time
    post(
        api,
        ev("draft_rejected", "sc", T0 + 50 * SECOND_MS),
        ev("circuit_breaker_opened", "sc", T0 + 55 * SECOND_MS),
    )
    assert detail(api, "sc")["status"] == "processing"


# --- failures ---------------------------------------------------------------------------------------


def test_a_stage_failure_records_the_stage_and_the_error(api: Api) -> None:
    post(
        api,
        ev("artifact_received", "f1", T0),
        ev("transcription_started", "f1", T0 + SECOND_MS),
        ev(
            "transcription_failed",
            "f1",
            T0 + 2 * SECOND_MS,
            error_code="asr_timeout",
            error_message="the ASR provider timed out after 30 s",
        ),
    )
    d = detail(api, "f1")
    assert d["status"] == "failed"
    assert d["failed_stage"] == "transcription"
    assert d["last_error_code"] == "asr_timeout"
    assert d["last_error_message"] == "the ASR provider timed out after 30 s"


@pytest.mark.parametrize(
    ("failure", "stage"),
    [
        ("claims_extraction_failed", "claims_extraction"),
        ("entity_resolution_failed", "entity_resolution"),
        ("draft_generation_failed", "draft_generation"),
    ],
)
def test_each_stage_failure_names_its_stage(api: Api, failure: str, stage: str) -> None:
    post(api, ev("artifact_received", "f2", T0), ev(failure, "f2", T0 + SECOND_MS, error_code=f"{stage}_err"))
    d = detail(api, "f2")
    assert (d["status"], d["failed_stage"], d["last_error_code"]) == ("failed", stage, f"{stage}_err")


def test_artifact_failed_with_a_stage_names_that_stage(api: Api) -> None:
    post(
        api,
        ev("artifact_received", "f3", T0),
        ev("claims_extraction_started", "f3", T0 + SECOND_MS),
        ev(
            "artifact_failed",
            "f3",
            T0 + 2 * SECOND_MS,
            pipeline_stage="claims_extraction",
            error_code="budget",
            error_message="out of budget",
        ),
    )
    d = detail(api, "f3")
    assert (d["status"], d["failed_stage"]) == ("failed", "claims_extraction")
    assert (d["last_error_code"], d["last_error_message"]) == ("budget", "out of budget")


def test_a_later_success_clears_the_failed_stage(api: Api) -> None:
    post(
        api,
        ev("artifact_received", "f4", T0),
        ev("transcription_failed", "f4", T0 + SECOND_MS, error_code="x"),
    )
    assert detail(api, "f4")["failed_stage"] == "transcription"
    post(api, ev("transcription_completed", "f4", T0 + 2 * SECOND_MS))
    d = detail(api, "f4")
    assert (d["status"], d["failed_stage"]) == ("transcribed", None)


def test_a_stageless_failure_names_the_stage_reached_whatever_the_arrival_order(api: Api) -> None:
    """artifact_failed without a stage fails in the stage the artifact was in: the stage of its latest
    (by time) status-changing event, even when that event arrives after the failure."""
    for n, order in enumerate(itertools.permutations(range(3))):
        artifact = f"sl-{n}"
        events = [
            ev("artifact_received", artifact, T0),
            ev("claims_extraction_started", artifact, T0 + SECOND_MS),
            ev("artifact_failed", artifact, T0 + 2 * SECOND_MS, error_code="oom"),
        ]
        for i in order:
            post(api, events[i])
        d = detail(api, artifact)
        assert (d["status"], d["current_stage"], d["failed_stage"]) == (
            "failed",
            "claims_extraction",
            "claims_extraction",
        ), order
        assert d["last_error_code"] == "oom"


def test_completion_keeps_the_last_stage_whatever_the_arrival_order(api: Api) -> None:
    for n, order in enumerate(itertools.permutations(range(3))):
        artifact = f"cs-{n}"
        events = [
            ev("artifact_received", artifact, T0),
            ev("drafts_generated", artifact, T0 + SECOND_MS),
            ev("artifact_completed", artifact, T0 + 2 * SECOND_MS),
        ]
        for i in order:
            post(api, events[i])
        d = detail(api, artifact)
        assert (d["status"], d["current_stage"], d["failed_stage"]) == ("completed", "draft_generation", None)


def test_the_last_error_is_the_latest_failures_whatever_the_arrival_order(api: Api) -> None:
    for n, order in enumerate(itertools.permutations(range(4))):
        artifact = f"le-{n}"
        events = [
            ev("transcription_failed", artifact, T0, error_code="first", error_message="1st"),
            ev("transcription_completed", artifact, T0 + SECOND_MS),
            ev(
                "claims_extraction_failed",
                artifact,
                T0 + 2 * SECOND_MS,
                error_code="second",
                error_message="2nd",
            ),
            ev("claims_extracted", artifact, T0 + 3 * SECOND_MS),
        ]
        for i in order:
            post(api, events[i])
        d = detail(api, artifact)
        assert (d["status"], d["failed_stage"]) == ("processing", None), order
        assert (d["last_error_code"], d["last_error_message"]) == ("second", "2nd"), order


# --- durations (SPEC 3.4) ---------------------------------------------------------------------------


def durations(api: Api, artifact_id: str) -> dict[str, float | None]:
    return {e["event_type"]: e["duration_ms"] for e in detail(api, artifact_id)["timeline"]}


def test_a_given_duration_wins(api: Api) -> None:
    post(api, ev("transcription_started", "d1", T0))
    post(
        api,
        ev(
            "transcription_completed",
            "d1",
            T0 + 9 * SECOND_MS,
            duration_ms=1234.5,
            stage_started_at=T0 + SECOND_MS,
            stage_completed_at=T0 + 3 * SECOND_MS,
        ),
    )
    assert durations(api, "d1")["transcription_completed"] == 1234.5


def test_stage_times_give_the_duration_when_none_is_given(api: Api) -> None:
    post(api, ev("claims_extraction_started", "d2", T0))
    post(
        api,
        ev(
            "claims_extracted",
            "d2",
            T0 + 9 * SECOND_MS,
            stage_started_at=format_time(T0 + SECOND_MS),
            stage_completed_at=format_time(T0 + 3 * SECOND_MS + 250),
        ),
    )
    assert durations(api, "d2")["claims_extracted"] == 2250


@pytest.mark.parametrize(
    ("started", "ended"),
    [
        ("transcription_started", "transcription_completed"),
        ("transcription_started", "transcription_failed"),
        ("claims_extraction_started", "claims_extracted"),
        ("entity_resolution_started", "entity_resolution_completed"),
        ("entity_resolution_started", "entity_needs_disambiguation"),
        ("entity_resolution_started", "entity_resolution_failed"),
        ("draft_generation_started", "drafts_generated"),
        ("draft_generation_started", "draft_generation_failed"),
    ],
)
def test_a_completion_in_a_later_request_pairs_with_its_start(api: Api, started: str, ended: str) -> None:
    post(api, ev(started, "d3", T0))
    post(api, ev("artifact_received", "other", T0 - SECOND_MS))  # unrelated traffic in between
    post(api, ev(ended, "d3", T0 + 4321))
    assert durations(api, "d3")[ended] == 4321
    # the same through the event list
    items = items_of(api.call("GET", f"/v1/events?artifact_id=d3&event_type={ended}"))
    assert [i["duration_ms"] for i in items] == [4321]


def test_pairing_uses_the_same_stage_and_the_same_artifact(api: Api) -> None:
    post(api, ev("transcription_started", "d4", T0), ev("claims_extraction_started", "d5", T0))
    post(
        api,
        ev("claims_extracted", "d4", T0 + 2 * SECOND_MS),  # d4 never started claims extraction
        ev("transcription_completed", "d5", T0 + 3 * SECOND_MS),  # d5 never started transcription
        ev("transcription_completed", "d6", T0 + 3 * SECOND_MS),  # d6 never started anything
    )
    assert durations(api, "d4")["claims_extracted"] is None
    assert durations(api, "d5")["transcription_completed"] is None
    assert durations(api, "d6")["transcription_completed"] is None


def test_pairing_takes_the_latest_start_before_the_completion(api: Api) -> None:
    post(api, ev("transcription_started", "d7", T0))
    post(api, ev("transcription_failed", "d7", T0 + 2 * SECOND_MS))
    post(api, ev("transcription_started", "d7", T0 + 10 * SECOND_MS))
    post(api, ev("transcription_completed", "d7", T0 + 13 * SECOND_MS))
    d = durations(api, "d7")
    assert d["transcription_failed"] == 2000
    assert d["transcription_completed"] == 3000


def test_started_and_confirmation_events_have_no_derived_duration(api: Api) -> None:
    post(api, ev("transcription_started", "d8", T0), ev("draft_confirmed", "d8", T0 + SECOND_MS))
    d = durations(api, "d8")
    assert d == {"transcription_started": None, "draft_confirmed": None}


# --- stuck, and the list filters --------------------------------------------------------------------


@pytest.fixture
def population(api: Api) -> dict[str, list[str]]:
    """Artifacts of every kind, received a minute apart, newest last. Clock: NOW_MS."""
    t = NOW_MS - 40 * MINUTE_MS
    groups: dict[str, list[str]] = {
        "completed": [],
        "failed": [],
        "quiet": [],
        "fresh": [],
    }
    events: list[dict[str, Any]] = []
    for i in range(12):
        artifact = f"p{i:02d}"
        org = "o1" if i % 2 else "o2"
        received = t + i * MINUTE_MS
        events.append(ev("artifact_received", artifact, received, organization_id=org))
        kind = ("completed", "failed", "quiet", "fresh")[i % 4]
        groups[kind].append(artifact)
        if kind == "completed":
            events.append(ev("artifact_completed", artifact, received + SECOND_MS, organization_id=org))
        elif kind == "failed":
            events.append(
                ev(
                    "claims_extraction_failed",
                    artifact,
                    received + SECOND_MS,
                    organization_id=org,
                    error_code="e",
                )
            )
        elif kind == "quiet":
            events.append(ev("transcription_started", artifact, received + SECOND_MS, organization_id=org))
        else:  # active, with an event a minute ago
            events.append(ev("claims_extraction_started", artifact, NOW_MS - MINUTE_MS, organization_id=org))
    post(api, *events)
    return groups


def test_lists_are_newest_received_first(api: Api, population: dict[str, list[str]]) -> None:
    assert listed(api) == [f"p{i:02d}" for i in reversed(range(12))]


def test_status_filters(api: Api, population: dict[str, list[str]], clock: FakeClock) -> None:
    newest_first = sorted(
        population["completed"] + population["failed"] + population["quiet"] + population["fresh"]
    )[::-1]

    def only(*groups: str) -> list[str]:
        return [a for a in newest_first if any(a in population[g] for g in groups)]

    assert listed(api, "&status=failed") == only("failed")
    assert listed(api, "&status=completed") == only("completed")
    assert listed(api, "&status=active") == only("quiet", "fresh")
    assert listed(api, "&status=transcribing") == only("quiet")
    assert listed(api, "&status=processing") == only("fresh")
    assert listed(api, "&status=received") == []
    # The quiet ones' last event is 28 to 39 minutes old: stuck after the default 5 minutes.
    assert listed(api, "&status=stuck") == only("quiet")
    flags = {a["artifact_id"]: a["stuck"] for a in items_of(api.call("GET", "/v1/artifacts?limit=500"))}
    assert flags == {a: a in population["quiet"] for a in newest_first}
    # A failed list item carries its stage.
    failed = items_of(api.call("GET", "/v1/artifacts?status=failed"))
    assert {(a["failed_stage"], a["last_error_code"]) for a in failed} == {("claims_extraction", "e")}

    # Ten minutes on, the fresh ones have gone quiet too; completed and failed ones never get stuck.
    clock.advance(10 * MINUTE_MS)
    assert listed(api, "&status=stuck") == only("quiet", "fresh")
    assert listed(api, "&status=active") == only("quiet", "fresh")


def test_filters_combine_with_organization(api: Api, population: dict[str, list[str]]) -> None:
    o1 = [a for a in listed(api) if int(a[1:]) % 2]
    assert listed(api, "&organization_id=o1") == o1
    assert listed(api, "&organization_id=o1&status=stuck") == [a for a in o1 if a in population["quiet"]]
    assert listed(api, "&organization_id=o2&status=failed") == [
        a for a in listed(api, "&status=failed") if int(a[1:]) % 2 == 0
    ]
    assert listed(api, "&organization_id=nobody") == []


def test_stuck_is_longer_than_the_threshold_by_event_time(api: Api, clock: FakeClock) -> None:
    threshold_ms = api.services.settings.stuck_after_s * 1000
    assert threshold_ms == 300_000  # the SPEC's default
    post(api, ev("artifact_received", "s1", NOW_MS), ev("artifact_received", "s2", NOW_MS))
    post(api, ev("artifact_completed", "s2", NOW_MS))
    clock.set(NOW_MS + threshold_ms)
    assert listed(api, "&status=stuck") == []
    assert detail(api, "s1")["stuck"] is False
    clock.advance(1)
    assert listed(api, "&status=stuck") == ["s1"]
    assert detail(api, "s1")["stuck"] is True
    assert detail(api, "s2")["stuck"] is False
    # A new event wakes it up.
    post(api, ev("transcription_started", "s1", clock.now_ms()))
    assert listed(api, "&status=stuck") == []
    assert detail(api, "s1")["stuck"] is False
    # An old event arriving late does not.
    clock.advance(threshold_ms + 1)
    post(api, ev("transcription_completed", "s1", clock.now_ms() - 10 * MINUTE_MS))
    assert listed(api, "&status=stuck") == ["s1"]


def test_the_stuck_threshold_is_a_setting(db_url: str, clock: FakeClock) -> None:
    settings = Settings(database_url=db_url, key_cache_s=0, stuck_after_s=60)
    services = Services(settings, clock)
    services.start()
    try:
        services.ingest_blocking([ev("artifact_received", "q1", NOW_MS - 61 * SECOND_MS)], STAFF)
        services.ingest_blocking([ev("artifact_received", "q2", NOW_MS - 59 * SECOND_MS)], STAFF)
        stuck = services.queries.list_artifacts(STAFF, "stuck", None, None, 50)
        assert [(s.artifact_id, flag) for s, flag in stuck.items] == [("q1", True)]
        assert services.queries.artifact(STAFF, "q1").stuck is True
        assert services.queries.artifact(STAFF, "q2").stuck is False
    finally:
        services.stop()


# --- detail -----------------------------------------------------------------------------------------


def test_detail_timeline_is_oldest_first_whatever_the_arrival(api: Api) -> None:
    run = pipeline_run("tl")
    arrivals = list(run)
    random.Random(7).shuffle(arrivals)
    post(api, *arrivals[:5])
    post(api, *arrivals[5:])
    d = detail(api, "tl")
    assert [e["event_id"] for e in d["timeline"]] == [e["event_id"] for e in run]
    assert [e["timestamp"] for e in d["timeline"]] == [e["timestamp"] for e in run]
    assert all(e["artifact_id"] == "tl" for e in d["timeline"])
    assert d["retries"] == []
    assert d["status"] == "completed"


def test_timeline_ties_keep_arrival_order(api: Api) -> None:
    a = ev("draft_confirmed", "tt", T0)
    b = ev("draft_rejected", "tt", T0)
    c = ev("artifact_received", "tt", T0 - SECOND_MS)
    post(api, b)
    post(api, a, c)
    assert [e["event_id"] for e in detail(api, "tt")["timeline"]] == [
        c["event_id"],
        b["event_id"],
        a["event_id"],
    ]


def test_detail_holds_only_that_artifacts_events(api: Api) -> None:
    post(api, *pipeline_run("x1")[:3], *pipeline_run("x2")[:2], ev("rate_limit_hit", None, T0))
    assert len(detail(api, "x1")["timeline"]) == 3
    assert len(detail(api, "x2")["timeline"]) == 2


def test_unknown_artifact_is_404(api: Api) -> None:
    r = api.call("GET", "/v1/artifacts/never-seen")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "artifact_not_found"
    # System events without an artifact create none.
    post(api, ev("circuit_breaker_opened", None, T0))
    assert listed(api) == []
