"""Survival (SPEC 20): ``kill -9`` of a server during sustained ingest loses no acknowledged event and
doubles none, once the client re-sends what was not acknowledged. Bounded: a few trials of seconds each."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.cli_runner import Cli
from tests.conftest import process_database
from tests.helpers import ServerProcess, ev, soaked

TRIALS = soaked(3, 24)
BATCHES_PER_TRIAL = 40
EVENTS_PER_BATCH = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    work = tmp_path_factory.mktemp("survival")
    with process_database(tmp_path_factory, "survival") as url:
        cli = Cli(work, url)
        key = cli.key(name="survival")
        process = ServerProcess({**cli.env, "VOICEMON_KEY_CACHE_S": "60"}, work / "serve.log")
        process.start()
        try:
            yield process, key
        finally:
            process.stop()


def _batches(trial: int, now_ms: int) -> list[list[dict[str, Any]]]:
    """Whole journeys (a receipt and a completed transcription), so the counters can be checked too."""
    out = []
    for b in range(BATCHES_PER_TRIAL):
        batch = []
        for i in range(EVENTS_PER_BATCH // 2):
            aid = f"kill-{trial}-{b}-{i}"
            t = now_ms - 10 * 60_000 + b * 1000 + i
            batch += [
                ev("artifact_received", aid, t, organization_id="org-k", event_id=f"{aid}-r"),
                ev("transcription_completed", aid, t + 500, organization_id="org-k", duration_ms=400,
                   event_id=f"{aid}-t"),
            ]  # fmt: skip
        out.append(batch)
    return out


def _send_until_acknowledged(url: str, key: str, batch: list[dict[str, Any]], deadline: float) -> int:
    """Send one batch until the server acknowledges it (retrying through the kill and the restart);
    returns how many attempts it took."""
    attempts = 0
    while True:
        attempts += 1
        try:
            reply = httpx.post(
                f"{url}/v1/events",
                json={"events": batch},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            if reply.status_code == 200:
                assert reply.json()["rejected"] == [], reply.text
                return attempts
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never came back"
        time.sleep(0.05)


def _kill_then_restart(process: ServerProcess, after_s: float, killed: threading.Event) -> None:
    time.sleep(after_s)
    process.kill()
    killed.set()
    process.start()


def test_kill_9_during_ingest_loses_nothing_acknowledged_and_doubles_nothing(
    server: tuple[ServerProcess, str],
) -> None:
    process, key = server
    rng = random.Random(20)
    now_ms = int(time.time() * 1000)
    sent: list[dict[str, Any]] = []
    retried = 0
    for trial in range(TRIALS):
        batches = _batches(trial, now_ms)
        killed = threading.Event()

        killer = threading.Thread(target=_kill_then_restart, args=(process, rng.uniform(0.2, 0.8), killed))
        killer.start()
        deadline = time.monotonic() + 60
        for batch in batches:
            retried += _send_until_acknowledged(process.url, key, batch, deadline) - 1
            sent += batch
        killer.join()
        assert killed.is_set()

    assert retried > 0, "some batch was cut off by a kill and sent again"
    headers = {"Authorization": f"Bearer {key}"}
    stored: list[str] = []
    cursor = None
    while True:
        params = {"limit": 500, "organization_id": "org-k", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{process.url}/v1/events", params=params, headers=headers, timeout=10).json()
        stored += [e["event_id"] for e in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(stored) == len(set(stored)), "no event is stored twice"
    assert sorted(stored) == sorted(e["event_id"] for e in sent), "every acknowledged event is stored"
    # The live counters were added to in the same transactions: a re-sent event is not counted again.
    counts = httpx.get(
        f"{process.url}/v1/metrics/realtime", params={"organization_id": "org-k"}, headers=headers, timeout=10
    ).json()["counts"]
    journeys = len(sent) // 2
    assert (counts["artifacts_received"], counts["transcriptions_completed"]) == (journeys, journeys)
