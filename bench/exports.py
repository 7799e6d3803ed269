"""The operator-facing reads of SPEC 17: a ``/metrics`` scrape, and exporting a million events."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import STAFF, Row, Sizes, fill_raw, services_for
from bench.dbs import driver_connection, fresh_database
from bench.server import server_process
from bench.workload import events, fill_events_sql
from voicemon.clock import FakeClock, SystemClock
from voicemon.domain.access import SYSTEM
from voicemon.domain.exports import EVENT_SOURCE
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to
from voicemon.settings import Settings


def _p99_ms(call: object, n: int) -> float:
    assert callable(call)
    call()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        lat.append((time.perf_counter() - t) * 1000)
    return float(np.quantile(lat, 0.99, method="inverted_cdf"))


def bench_metrics_scrape(backend: str, sizes: Sizes) -> list[Row]:
    """p99 of ``GET /metrics`` (in-process ASGI) with ``sizes.alert_orgs`` organizations of artifacts and
    open alerts, organization labels on (the heaviest form): once with the state read from the database
    on every scrape (its cache expired), once as scrapes mostly find it (cached), against ``/healthz``."""
    from fastapi.testclient import TestClient

    from voicemon.api import create_app

    now = floor_to(SystemClock().now_ms(), HOUR_MS) + 40 * MINUTE_MS
    clock = FakeClock(now)
    with fresh_database(backend) as url:
        svc = services_for(url, clock)
        fill_raw(
            svc,
            events(sizes.alert_events, now - HOUR_MS, HOUR_MS - 1, seed=31, orgs=sizes.alert_orgs),
            now,
        )
        svc.alerts.evaluate(STAFF)
        svc.stop()
        settings = Settings(database_url=url, key_cache_s=60, event_retention_h=240, metrics_org_labels=True)
        app = create_app(settings, clock=clock, run_dispatcher=False)
        with TestClient(app) as client:
            served = app.state.services
            key = served.keys.create(SYSTEM, "viewer", None, "bench").secret
            headers = {"Authorization": f"Bearer {key}"}
            state = served.telemetry._state  # the scrape-time collector

            def scrape() -> None:
                reply = client.get("/metrics", headers=headers)
                assert reply.status_code == 200, reply.text

            def scrape_uncached() -> None:
                state._cached = None
                scrape()

            n = 200
            uncached = _p99_ms(scrape_uncached, n)
            cached = _p99_ms(scrape, n)
            base = _p99_ms(lambda: client.get("/healthz"), n)
            families = client.get("/metrics", headers=headers).text.count("# TYPE")
    label = f"ms p99 ({sizes.alert_orgs} orgs, {families} families)"
    return [
        Row(
            "metrics_scrape",
            uncached,
            label + ", state read",
            "GET /healthz p99",
            base,
            uncached / base,
            "<= 50 ms",
            uncached <= 50,
        ),
        Row(
            "metrics_scrape_cached",
            cached,
            label + ", state cached",
            "GET /healthz p99",
            base,
            cached / base,
            "<= 50 ms",
            cached <= 50,
        ),
    ]


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def bench_export_events(backend: str, sizes: Sizes) -> list[Row]:
    """Rows per second and the server's memory while it streams ``sizes.export_events`` events over
    HTTP (``voicemon serve`` on its own core, the client reading as fast as it can), in each format.
    The baseline is the driver alone reading the same columns of the same rows in the same order: what
    any export must at least do. Memory: the server's peak resident set during the export (its high
    water mark, reset before) above its resident set before it."""
    count = sizes.export_events
    now = SystemClock().now_ms()
    rows: list[Row] = []
    with fresh_database(backend) as url:
        svc = services_for(url)
        with svc.db.write() as conn:
            fill_events_sql(conn, count, now - 5 * DAY_MS, 4 * DAY_MS, postgres=backend != "sqlite")
        key = svc.keys.create(SYSTEM, "staff", None, "bench").secret
        svc.stop()
        base_rate = _bare_read(url, count)
        with server_process(url) as (base, proc):
            headers = {"Authorization": f"Bearer {key}"}
            for fmt in ("csv", "jsonl"):
                clear = Path(f"/proc/{proc.pid}/clear_refs")
                clear.write_text("5")  # resets the peak resident set (VmHWM) to the current one
                before = _rss_kib(proc.pid, "VmRSS")
                lines = 0
                t = time.perf_counter()
                with httpx.stream(
                    "GET", f"{base}/v1/exports/events?format={fmt}", headers=headers, timeout=120
                ) as reply:
                    assert reply.status_code == 200, reply.read()
                    for chunk in reply.iter_raw(1 << 20):
                        lines += chunk.count(b"\n")
                seconds = time.perf_counter() - t
                growth_mb = (_rss_kib(proc.pid, "VmHWM") - before) / 1024
                exported = lines - (1 if fmt == "csv" else 0)
                assert exported == count, (exported, count)
                rate = count / seconds
                rows.append(
                    Row(
                        f"export_events_{fmt}",
                        rate,
                        f"rows/s over HTTP ({count:,} events)",
                        "driver reading the same rows",
                        base_rate,
                        rate / base_rate,
                        ">= 100k rows/s",
                        rate >= 100_000,
                    )
                )
                rows.append(
                    Row(
                        f"export_events_{fmt}_rss",
                        growth_mb,
                        "MB server peak RSS growth",
                        None,
                        None,
                        None,
                        "<= 50 MB",
                        growth_mb <= 50,
                    )
                )
    return rows


def _bare_read(url: str, count: int) -> float:
    """Rows per second of the driver alone: the export's columns, oldest first, fetched in batches."""
    columns = ", ".join(EVENT_SOURCE)
    conn = driver_connection(url)
    try:
        # A server-side cursor on PostgreSQL, as the export's.
        cur = conn.cursor() if url.startswith("sqlite") else conn.cursor(name="bare")
        t = time.perf_counter()
        cur.execute(f"SELECT {columns} FROM events ORDER BY ts_ms, seq")
        seen = 0
        while batch := cur.fetchmany(2000):
            seen += len(batch)
        seconds = time.perf_counter() - t
    finally:
        conn.close()
    assert seen == count
    return count / seconds
