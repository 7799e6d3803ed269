"""``voicemon simulate --otlp``: the simulated pipeline reports through the OpenTelemetry SDK and its
OTLP/HTTP exporter, and voicemon stores the events the simulator meant, with their durations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.cli_runner import Cli
from tests.conftest import process_database
from tests.helpers import ServerProcess
from voicemon.sim import DerivedStore, SimConfig, Simulator


class Recorder:
    """The events the simulator logs, for the expected counts."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def log_event(self, event_type: str, *, timestamp: int, **fields: Any) -> None:
        self.events.append({"event_type": event_type, "timestamp": timestamp, **fields})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, ServerProcess, str]]:
    work = tmp_path_factory.mktemp("simulate-otlp")
    with process_database(tmp_path_factory, "simulate_otlp") as url:
        cli = Cli(work, url)
        key = cli.key(name="sim")
        process = ServerProcess(cli.env, work / "serve.log")
        process.start()
        try:
            yield cli, process, key
        finally:
            process.stop()


def _stored(url: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{url}/v1/events", params=params, headers={"Authorization": f"Bearer {key}"}).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_the_simulator_reports_through_opentelemetry(
    server: tuple[Cli, ServerProcess, str], tmp_path: Path
) -> None:
    cli, process, key = server
    args = ("--backfill-hours", "2", "--backfill-rate", "40", "--organizations", "3", "--seed", "7")
    done = cli.run("simulate", "--otlp", "--url", process.url, "--key", key, "--rate", "0", *args,
                   "--store", str(tmp_path / "sim.db"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dropped 0" in done.stdout

    recorder = Recorder()
    store = DerivedStore(str(tmp_path / "expected.db"))
    try:
        Simulator(recorder, store, SimConfig(organizations=3), seed=7).backfill(2, 40)
    finally:
        store.close()
    stored = _stored(process.url, key)
    assert Counter(e["event_type"] for e in stored) == Counter(e["event_type"] for e in recorder.events)
    assert all(e["event_id"].startswith("otlp-") for e in stored)
    # Each stage ending carries its measured duration (to the millisecond: span times are in ms here).
    expected = sorted(e["duration_ms"] for e in recorder.events if e.get("duration_ms") is not None)
    measured = sorted(e["duration_ms"] for e in stored if e["duration_ms"] is not None)
    assert len(measured) == len(expected)
    assert all(abs(a - b) <= 1.0 for a, b in zip(measured, expected, strict=True))
