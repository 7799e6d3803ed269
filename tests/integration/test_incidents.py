"""``simulate --incident`` makes the alert of the same name fire, and resolve once it ends (SPEC 14): the
simulator runs live with millisecond stages for one organization, what it logs is ingested, and the
evaluation judges it on a clock set to the wall clock the simulator used."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import STAFF
from tests.helpers import wait_for
from tests.unit.test_sim import RecordingClient
from voicemon.clock import FakeClock
from voicemon.sdk import Client
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.sim import DerivedStore, Incident, SimConfig, Simulator
from voicemon.sim.model import StageProfile

RATE_PER_MIN = 6000  # a hundred notes a second


def fast_config() -> SimConfig:
    """One organization (org-001, Riverside FC), stages of a few milliseconds, no failures of its own."""
    stages = {
        name: StageProfile(3, 0.2, 0.0, p.model, p.usd_per_call) for name, p in SimConfig().stages.items()
    }
    return SimConfig(organizations=1, stages=stages, gap_ms=1.0)


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    # Stuck after one second, so a stalled note counts as stuck within the test.
    s = Services(settings.model_copy(update={"stuck_after_s": 1}), FakeClock(int(time.time() * 1000)))
    s.start()
    yield s
    s.stop()


def run_incident(
    tmp_path: Path, incident: Incident, seconds: float, minutes: float | None = None
) -> RecordingClient:
    client = RecordingClient()
    store = DerivedStore(str(tmp_path / f"sim-{uuid.uuid4()}.db"))
    sim = Simulator(cast(Client, client), store, fast_config(), seed=7)
    try:
        org = sim.begin_incident(incident, "org-001", minutes)
        assert org.name == "Riverside FC"
        sim.start_live(RATE_PER_MIN)
        time.sleep(seconds)
    finally:
        sim.stop()
        store.close()
    return client


def ingest(svc: Services, client: RecordingClient) -> None:
    with client.lock:
        batch: list[dict[str, Any]] = [{"event_id": str(uuid.uuid4()), **e} for e in client.events]
        client.events.clear()
    result = svc.ingest_blocking(batch, STAFF)
    assert result.rejected == [], result.rejected[:3]


def evaluate_now(svc: Services) -> None:
    clock = svc.clock
    assert isinstance(clock, FakeClock)
    clock.set(int(time.time() * 1000))
    svc.alerts.evaluate(STAFF)


def open_rules(svc: Services) -> set[str]:
    return {a.rule for a, _ in svc.alerts.list_alerts(STAFF, state="open", organization_id="org-001").items}


@pytest.mark.parametrize(
    ("incident", "seconds"),
    [(Incident.FAILURE_RATE, 1.0), (Incident.STUCK_ARTIFACTS, 1.5), (Incident.BUDGET, 0.3)],
    ids=str,
)
def test_an_incident_fires_the_alert_of_its_name(
    svc: Services, tmp_path: Path, incident: Incident, seconds: float
) -> None:
    client = run_incident(tmp_path, incident, seconds)
    ingest(svc, client)
    evaluate_now(svc)
    assert incident.value in open_rules(svc)


def test_without_an_incident_nothing_fires(svc: Services, tmp_path: Path) -> None:
    client = RecordingClient()
    store = DerivedStore(str(tmp_path / "calm.db"))
    sim = Simulator(cast(Client, client), store, fast_config(), seed=7)
    sim.start_live(RATE_PER_MIN)
    time.sleep(1.0)
    sim.stop()
    store.close()
    ingest(svc, client)
    evaluate_now(svc)
    assert open_rules(svc) == set()


def test_a_breaker_incident_fires_then_resolves_when_it_ends(svc: Services, tmp_path: Path) -> None:
    client = RecordingClient()
    store = DerivedStore(str(tmp_path / "breaker.db"))
    sim = Simulator(cast(Client, client), store, fast_config(), seed=7)
    try:
        sim.begin_incident(Incident.CIRCUIT_BREAKER, "org-001", minutes=0.02)  # 1.2 s
        sim.start_live(RATE_PER_MIN)
        ingest(svc, client)
        evaluate_now(svc)
        assert "circuit_breaker" in open_rules(svc)
        wait_for(
            lambda: any(e["event_type"] == "circuit_breaker_closed" for e in client.events),
            10,
            "the breaker closing",
        )
    finally:
        sim.stop()
        store.close()
    ingest(svc, client)
    evaluate_now(svc)
    evaluate_now(svc)
    assert "circuit_breaker" not in open_rules(svc)
    [resolved] = [
        a
        for a, _ in svc.alerts.list_alerts(STAFF, state="resolved", rule="circuit_breaker").items
        if a.scope == "org-001"
    ]
    assert resolved.resolved_ms is not None
