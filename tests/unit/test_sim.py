"""The simulated pipeline (SPEC 11): journeys, the derived-data store, retries and the retry webhook.

The simulator reports through a fake client that records what it is given; stages are made to last a few
milliseconds so whole journeys play out in real time within the test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.helpers import wait_for
from voicemon.sdk import Client
from voicemon.sim import DerivedStore, RetryOrder, RetryWebhook, SimConfig, Simulator
from voicemon.sim.model import (
    STAGE_TYPES,
    STAGES,
    Incident,
    StageProfile,
    organizations,
    pick_org,
    plan_journey,
    stalled,
    under_incident,
)
from voicemon.sim.pipeline import RetryNotHonoured

SECRET = "webhook-secret"
COMPLETIONS = {types[1] for types in STAGE_TYPES.values()} | {"entity_needs_disambiguation"}
STAGE_FAILURES = {types[2] for types in STAGE_TYPES.values()}
STAGE_OF = {t: stage for stage, types in STAGE_TYPES.items() for t in types}
STAGE_OF["entity_needs_disambiguation"] = "entity_resolution"


def config_with(failure_p: float, median_ms: float = 2500) -> SimConfig:
    """Every stage with the same failure probability (and, optionally, a short latency)."""
    stages = {
        stage: StageProfile(median_ms, p.sigma, failure_p, p.model, p.usd_per_call)
        for stage, p in SimConfig().stages.items()
    }
    return SimConfig(stages=stages, gap_ms=1 if median_ms < 100 else 150)


# --- plan_journey ---------------------------------------------------------------------------------------


def journeys(config: SimConfig, n: int, seed: int, **kwargs: Any) -> list[Any]:
    rng = random.Random(seed)
    orgs = organizations(config)
    return [plan_journey(f"a-{i}", pick_org(orgs, rng), rng, config, **kwargs) for i in range(n)]


def check_common(journey: Any) -> list[str]:
    offsets = [offset for offset, _ in journey.events]
    assert offsets == sorted(offsets)
    for _, event in journey.events:
        assert event["artifact_id"] == journey.artifact_id
        if event["event_type"] in COMPLETIONS | STAGE_FAILURES:
            assert event["duration_ms"] > 0
    return [event["event_type"] for _, event in journey.events]


def test_initial_journeys_are_ordered_timed_and_end_as_they_should() -> None:
    planned = journeys(SimConfig(), 3000, seed=11)
    failed = [j for j in planned if j.failed_stage is not None]
    assert 100 < len(failed) < 600  # about 8 % fail with the default profiles
    for journey in planned:
        types = check_common(journey)
        assert types[0] == "artifact_received"
        if journey.failed_stage is None:
            done = types.index("artifact_completed")
            assert types[done + 1 :] in ([], ["draft_confirmed"], ["draft_rejected"])
            assert [STAGE_OF[t] for t in types[1:done] if t in COMPLETIONS] == list(STAGES)
            assert set(journey.derived) == set(STAGES)
        else:
            started, _, failure = STAGE_TYPES[journey.failed_stage]
            assert types[-2:] == [failure, "artifact_failed"]
            assert types[-3] == started
            reached = STAGES[: STAGES.index(journey.failed_stage) + 1]
            assert {STAGE_OF[t] for t in types[1:-1]} == set(reached)
            assert "artifact_completed" not in types
            # Derived data only of the stages that completed.
            assert set(journey.derived) == set(reached[:-1])


def test_a_journey_that_fails_stops_at_its_first_failure() -> None:
    for journey in journeys(config_with(failure_p=1.0), 50, seed=3):
        assert journey.failed_stage == "transcription"
        assert check_common(journey) == [
            "artifact_received",
            "transcription_started",
            "transcription_failed",
            "artifact_failed",
        ]
        fail = journey.events[2][1]
        assert (fail["error_code"], fail["error_message"]) == ("asr_timeout", "audio could not be decoded")
        assert journey.events[3][0] > journey.events[2][0]


@pytest.mark.parametrize("stage", STAGES)
def test_a_retry_journey_starts_at_its_stage_and_cannot_fail(stage: str) -> None:
    for journey in journeys(config_with(failure_p=1.0), 50, seed=5, from_stage=stage, can_fail=False):
        types = check_common(journey)
        assert journey.failed_stage is None
        assert types[0] == STAGE_TYPES[stage][0]
        assert "artifact_received" not in types
        assert not set(types) & (STAGE_FAILURES | {"artifact_failed"})
        done = types.index("artifact_completed")
        assert [STAGE_OF[t] for t in types[:done] if t in COMPLETIONS] == list(STAGES[STAGES.index(stage) :])


def test_organizations_have_zipf_like_volumes() -> None:
    config = SimConfig(organizations=8)
    orgs = organizations(config)
    assert len({o.organization_id for o in orgs}) == 8
    weights = [o.weight for o in orgs]
    assert weights == sorted(weights, reverse=True)
    assert weights[0] > 5 * weights[-1]
    rng = random.Random(1)
    picks = [pick_org(orgs, rng).organization_id for _ in range(20_000)]
    assert picks.count(orgs[0].organization_id) > 5 * picks.count(orgs[-1].organization_id) > 0


def test_journeys_are_reproducible_from_the_seed() -> None:
    def events(seed: int) -> list[Any]:
        return [j.events for j in journeys(SimConfig(), 20, seed=seed)]

    assert events(9) == events(9)
    assert events(9) != events(10)


# --- DerivedStore ---------------------------------------------------------------------------------------


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "sim.db")


@pytest.fixture
def store(store_path: str) -> Iterator[DerivedStore]:
    s = DerivedStore(store_path)
    yield s
    s.close()


def fill(store: DerivedStore, artifact_id: str, run_id: str = "initial") -> None:
    for stage in STAGES:
        store.write(artifact_id, stage, run_id, [f"{stage} {i}" for i in range(3)])


def count_rows(store: DerivedStore, artifact_id: str) -> int:
    return sum(len(rows) for rows in store.rows(artifact_id).values())


def fail_deletes_from(path: str, table: str) -> None:
    """A trigger that makes every DELETE on ``table`` fail, as a broken disk or lock would."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            f"CREATE TRIGGER fail_{table} BEFORE DELETE ON {table} BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        conn.commit()
    finally:
        conn.close()


def drop_trigger(path: str, table: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"DROP TRIGGER fail_{table}")
        conn.commit()
    finally:
        conn.close()


def test_write_replaces_the_rows_of_one_stage(store: DerivedStore) -> None:
    fill(store, "a1")
    store.write("a1", "claims_extraction", "r-1", ["only claim"])
    rows = store.rows("a1")
    assert rows["claims_extraction"] == [("r-1", "only claim")]
    assert rows["transcription"] == [("initial", f"transcription {i}") for i in range(3)]


def test_delete_all_removes_every_row_of_the_artifact_only(store: DerivedStore) -> None:
    fill(store, "a1")
    fill(store, "a2")
    assert store.delete_all("a1") == 12
    assert store.rows("a1") == {stage: [] for stage in STAGES}
    assert count_rows(store, "a2") == 12
    assert store.delete_all("a1") == 0


def test_a_delete_all_that_fails_midway_leaves_every_row(store: DerivedStore, store_path: str) -> None:
    """The last table's delete fails after the first three succeeded: all of it is rolled back."""
    fill(store, "a1")
    before = store.rows("a1")
    fail_deletes_from(store_path, "drafts")
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        store.delete_all("a1")
    assert store.rows("a1") == before
    # The store is still usable: the failed transaction did not stay open.
    store.write("a2", "transcription", "initial", ["t"])
    assert count_rows(store, "a2") == 1


# --- Simulator and retries ------------------------------------------------------------------------------


class RecordingClient:
    """Stands in for ``voicemon.Client``: records what the simulator logs, calling ``probe`` (if set)
    with each event as it is logged."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.probe: Callable[[dict[str, Any]], None] | None = None

    def log_event(self, event_type: str, **fields: Any) -> None:
        event = {"event_type": event_type, **fields}
        if self.probe is not None:
            self.probe(event)
        with self.lock:
            self.events.append(event)

    def of(self, artifact_id: str) -> list[str]:
        with self.lock:
            return [e["event_type"] for e in self.events if e.get("artifact_id") == artifact_id]


@pytest.fixture
def fake_client() -> RecordingClient:
    return RecordingClient()


@pytest.fixture
def live_sim(fake_client: RecordingClient, store: DerivedStore) -> Iterator[Simulator]:
    """A live simulator with millisecond stages, starting one artifact of its own at once and no more
    for hours (so only the artifacts a test retries are in play besides that one)."""
    sim = Simulator(cast(Client, fake_client), store, config_with(failure_p=0.0, median_ms=2), seed=4)
    sim.start_live(rate_per_min=0.0001)
    yield sim
    sim.stop()


def order(retry_id: str, artifact_id: str, stage: str = "full") -> RetryOrder:
    return RetryOrder(retry_id, artifact_id, "org-001", stage, stage == "full")


def test_a_full_retry_deletes_derived_data_then_rebuilds_it(
    live_sim: Simulator, fake_client: RecordingClient, store: DerivedStore
) -> None:
    fill(store, "r1")
    rows_when_logged: list[int] = []

    def probe(event: dict[str, Any]) -> None:
        if event["artifact_id"] == "r1":
            rows_when_logged.append(count_rows(store, "r1"))

    fake_client.probe = probe
    live_sim.handle_retry(order("retry-1", "r1"))
    wait_for(lambda: "artifact_completed" in fake_client.of("r1"), 10, "the retried run to complete")

    # Nothing of the earlier run was left when the new one began.
    assert rows_when_logged[0] == 0
    types = fake_client.of("r1")
    assert types[0] == "transcription_started"
    assert "artifact_received" not in types
    rows = store.rows("r1")
    assert all(rows[stage] for stage in STAGES)
    assert {run_id for stage_rows in rows.values() for run_id, _ in stage_rows} == {"retry-1"}
    assert live_sim.retries_handled == 1


def test_a_stage_retry_keeps_earlier_stages(
    live_sim: Simulator, fake_client: RecordingClient, store: DerivedStore
) -> None:
    fill(store, "r2")
    live_sim.handle_retry(order("retry-2", "r2", "entity_resolution"))
    wait_for(lambda: "artifact_completed" in fake_client.of("r2"), 10, "the retried run to complete")

    assert fake_client.of("r2")[0] == "entity_resolution_started"
    runs = {stage: {run for run, _ in rows} for stage, rows in store.rows("r2").items()}
    assert runs == {
        "transcription": {"initial"},
        "claims_extraction": {"initial"},
        "entity_resolution": {"retry-2"},
        "draft_generation": {"retry-2"},
    }


def test_a_full_retry_whose_cleanup_fails_does_nothing(
    live_sim: Simulator, fake_client: RecordingClient, store: DerivedStore, store_path: str
) -> None:
    fill(store, "r3")
    before = store.rows("r3")
    fail_deletes_from(store_path, "drafts")
    with pytest.raises(RetryNotHonoured):
        live_sim.handle_retry(order("retry-3", "r3"))
    # A retry of another artifact, asked after, plays out in full: the loop had time to play r3 too.
    live_sim.handle_retry(order("retry-4", "r4", "transcription"))
    wait_for(lambda: "artifact_completed" in fake_client.of("r4"), 10, "the other retry to complete")

    assert fake_client.of("r3") == []
    assert store.rows("r3") == before
    assert live_sim.retries_handled == 1

    # Once the store works again, the same command delivered again is honoured.
    drop_trigger(store_path, "drafts")
    live_sim.handle_retry(order("retry-3", "r3"))
    wait_for(lambda: "artifact_completed" in fake_client.of("r3"), 10, "the retried run to complete")
    assert live_sim.retries_handled == 2


def test_the_webhook_answers_500_to_a_command_it_could_not_honour(
    fake_client: RecordingClient, store: DerivedStore, store_path: str
) -> None:
    sim = Simulator(cast(Client, fake_client), store, seed=1)
    hook = RetryWebhook(SECRET, sim.handle_retry)
    hook.start()
    try:
        fill(store, "r7")
        fail_deletes_from(store_path, "drafts")
        body = command("r-broken", artifact_id="r7", stage="full", full_cleanup=True)
        assert post(hook, body, signature(body)) == 500
        drop_trigger(store_path, "drafts")
        assert post(hook, body, signature(body)) == 200
    finally:
        hook.stop()
    assert sim.retries_handled == 1


def test_a_repeated_retry_id_is_handled_once(
    live_sim: Simulator, fake_client: RecordingClient, store: DerivedStore
) -> None:
    for _ in range(3):
        live_sim.handle_retry(order("retry-5", "r5", "draft_generation"))
    live_sim.handle_retry(order("retry-6", "r5", "draft_generation"))
    wait_for(lambda: fake_client.of("r5").count("artifact_completed") >= 2, 10, "two retried runs")
    time.sleep(0.2)  # time for any third run to show

    assert live_sim.retries_handled == 2
    assert fake_client.of("r5").count("draft_generation_started") == 2
    assert fake_client.of("r5").count("artifact_completed") == 2


# --- RetryWebhook ---------------------------------------------------------------------------------------


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def received() -> list[RetryOrder]:
    return []


@pytest.fixture
def webhook(received: list[RetryOrder]) -> Iterator[RetryWebhook]:
    hook = RetryWebhook(SECRET, received.append)
    hook.start()
    yield hook
    hook.stop()


def command(retry_id: str = "r-1", **changes: Any) -> bytes:
    body = {
        "retry_id": retry_id,
        "artifact_id": "a1",
        "voice_note_id": "vn-1",
        "organization_id": "org-002",
        "stage": "full",
        "attempt": 1,
        "full_cleanup": True,
        **changes,
    }
    return json.dumps(body).encode()


def post(hook: RetryWebhook, body: bytes, sig: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if sig is not None:
        headers["X-Voicemon-Signature"] = sig
    return httpx.post(hook.url, content=body, headers=headers, timeout=10).status_code


def test_the_webhook_listens_on_loopback(webhook: RetryWebhook) -> None:
    assert webhook.url.startswith("http://127.0.0.1:")
    assert webhook.url.endswith("/retries")


def test_the_webhook_refuses_a_bad_signature(webhook: RetryWebhook, received: list[RetryOrder]) -> None:
    body = command()
    assert post(webhook, body, None) == 401
    assert post(webhook, body, signature(body, "another-secret")) == 401
    assert post(webhook, body, signature(body).removeprefix("sha256=")) == 401
    assert post(webhook, command(artifact_id="a2"), signature(body)) == 401  # signed a different body
    assert received == []


def test_the_webhook_accepts_a_good_signature(webhook: RetryWebhook, received: list[RetryOrder]) -> None:
    body = command()
    assert post(webhook, body, signature(body)) == 200
    assert received == [RetryOrder("r-1", "a1", "org-002", "full", True)]


def test_the_webhook_refuses_a_signed_body_that_is_not_a_command(
    webhook: RetryWebhook, received: list[RetryOrder]
) -> None:
    for body in (b"not json", b'{"artifact_id": "a1"}'):
        assert post(webhook, body, signature(body)) == 400
    assert received == []


def test_a_command_delivered_twice_is_handled_once(fake_client: RecordingClient, store: DerivedStore) -> None:
    """Delivery is at least once: the webhook passes both deliveries on, the simulator acts once."""
    sim = Simulator(cast(Client, fake_client), store, seed=1)
    hook = RetryWebhook(SECRET, sim.handle_retry)
    hook.start()
    try:
        body = command("r-twice", stage="claims_extraction", full_cleanup=False)
        assert post(hook, body, signature(body)) == 200
        assert post(hook, body, signature(body)) == 200
        other = command("r-other", stage="claims_extraction", full_cleanup=False)
        assert post(hook, other, signature(other)) == 200
    finally:
        hook.stop()
    assert sim.retries_handled == 2


def test_incidents_shape_the_journeys_of_their_organization() -> None:
    base = SimConfig()
    org = organizations(base)[0]

    def median_duration(config: SimConfig, stage_event: str) -> float:
        rng = random.Random(3)
        durations = sorted(
            e["duration_ms"]
            for i in range(400)
            for _, e in plan_journey(f"m{i}", org, rng, config, can_fail=False).events
            if e["event_type"] == stage_event
        )
        return durations[len(durations) // 2]

    slow = under_incident(base, Incident.STAGE_LATENCY)
    ratio = median_duration(slow, "transcription_completed") / median_duration(
        base, "transcription_completed"
    )
    assert 4.5 < ratio < 8, ratio
    pricey = under_incident(base, Incident.COST_SPIKE)
    assert all(pricey.stages[s].usd_per_call == 20 * base.stages[s].usd_per_call for s in STAGES)
    failing = under_incident(base, Incident.FAILURE_RATE)
    assert failing.stages["transcription"].failure_p == 0.6
    assert under_incident(base, None) is base
    journey = stalled(plan_journey("s1", org, random.Random(1), base, can_fail=False))
    assert [e["event_type"] for _, e in journey.events] == ["artifact_received", "transcription_started"]
