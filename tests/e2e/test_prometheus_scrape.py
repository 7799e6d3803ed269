"""A real Prometheus scrapes voicemon (SPEC 17): Debian's ``prometheus``, started on 127.0.0.1 with the
key in its scrape config, answers a query with the number of events the test ingested. Two replicas on
one database: their process counters, summed over both scrapes, equal what was ingested."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.api.cli_runner import Cli
from tests.api.test_prometheus import samples
from tests.conftest import process_database
from tests.helpers import ServerProcess, ev, free_port, wait_for
from voicemon.domain.access import SYSTEM


def _require(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (apt-get install prometheus)"
        if "CI" in os.environ:
            pytest.fail(f"{message}, and CI must run this test", pytrace=False)
        pytest.skip(message)
    return found


def _batch(prefix: str, n: int) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [
        ev("artifact_received", f"{prefix}-{i}", now - 1000, organization_id="org-prom") for i in range(n)
    ]


def _ingest(url: str, key: str, events: list[dict[str, object]]) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    reply = httpx.post(f"{url}/v1/events", json={"events": events}, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


def _accepted(url: str, key: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    return sum(
        v
        for (name, labels), v in samples(text).items()
        if name == "voicemon_events_total" and ("outcome", "accepted") in labels
    )


def test_prometheus_scrapes_with_a_key_and_two_replicas_add_up(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    prometheus = _require("prometheus")
    with process_database(tmp_path_factory, "prometheus") as url:
        cli = Cli(tmp_path, url)
        cli.upgrade()
        svc = cli.services()
        try:
            key = svc.keys.create(SYSTEM, "staff", None, "prometheus").secret
        finally:
            svc.db.dispose()
        servers = [ServerProcess(cli.env, tmp_path / f"serve-{i}.log") for i in range(2)]
        for server in servers:
            server.start()
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: voicemon\n    metrics_path: /metrics\n"
            f"    authorization:\n      type: Bearer\n      credentials: {key}\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{servers[0].port}', '127.0.0.1:{servers[1].port}']\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert _ingest(servers[0].url, key, _batch("a", 7))["accepted"] == 7
            second = _batch("b", 5)
            assert _ingest(servers[1].url, key, second)["accepted"] == 5
            assert _ingest(servers[0].url, key, second)["duplicates"] == 5  # a replay, through the other
            # Each replica counts what it did; summed, they are what was ingested, once.
            assert _accepted(servers[0].url, key) == 7
            assert _accepted(servers[1].url, key) == 5
            query = f"http://127.0.0.1:{prom_port}/api/v1/query"

            def answered() -> bool:
                try:
                    reply = httpx.get(
                        query, params={"query": 'sum(voicemon_events_total{outcome="accepted"})'}, timeout=5
                    )
                    result = reply.json()["data"]["result"]
                except (httpx.HTTPError, KeyError, ValueError):
                    return False
                return bool(result) and float(result[0]["value"][1]) == 12

            wait_for(answered, 60, "Prometheus to scrape both replicas", poll_s=0.5)
            up = httpx.get(query, params={"query": "sum(up{job='voicemon'})"}, timeout=5).json()["data"][
                "result"
            ]
            assert float(up[0]["value"][1]) == 2  # both scrapes authenticated and parsed
        finally:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
            log.close()
            for server in servers:
                server.stop()
