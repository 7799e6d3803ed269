"""OTLP ingestion (SPEC 18): stage spans per second through ``POST /otlp/v1/traces``, beside the same
stage executions sent as JSON events through ``POST /v1/events``."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from bench.common import Row, Sizes, ingest_key, services_for
from bench.dbs import fresh_database
from bench.server import pin_load, running_server, unpin
from voicemon.clock import SystemClock
from voicemon.domain.timeutil import HOUR_MS
from voicemon.storage.events import count_events

SPANS_PER_REQUEST = 512  # the stock exporter's batch
EVENTS_PER_REQUEST = 1000  # the JSON path's largest batch: 500 stage executions
STAGES = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")
NS = 1_000_000


class _Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += spans
        return SpanExportResult.SUCCESS


def _executions(count: int, now_ms: int) -> list[tuple[str, str, str, int, int, float]]:
    """(artifact, organization, stage, start ms, end ms, cost) of ``count`` stage executions."""
    rng = random.Random(41)
    out = []
    for i in range(count):
        start = now_ms - HOUR_MS + rng.randrange(HOUR_MS - 120_000)
        out.append(
            (
                f"otlp-b-{i // 4}",
                f"org-{i % 20:02d}",
                STAGES[i % 4],
                start,
                start + rng.randrange(200, 8000),
                round(rng.uniform(0.001, 0.05), 4),
            )
        )
    return out


def _protobuf_bodies(executions: list[tuple[str, str, str, int, int, float]]) -> list[bytes]:
    """Spans made by the OpenTelemetry SDK, encoded as its OTLP/HTTP exporter encodes them."""
    kept = _Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-pipeline"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("bench")
    for artifact, org, stage, start, end, cost in executions:
        attributes = {
            "voicemon.artifact_id": artifact,
            "voicemon.organization_id": org,
            "gen_ai.request.model": "model-a",
            "gen_ai.usage.cost": cost,
        }
        span = tracer.start_span(stage, attributes=attributes, start_time=start * NS)
        span.end(end_time=end * NS)
    provider.shutdown()
    spans = kept.spans
    return [
        encode_spans(spans[i : i + SPANS_PER_REQUEST]).SerializeToString()
        for i in range(0, len(spans), SPANS_PER_REQUEST)
    ]


def _json_bodies(executions: list[tuple[str, str, str, int, int, float]]) -> list[bytes]:
    """The same executions as a pipeline would send them to /v1/events: a start and an end each."""
    endings = {
        "transcription": "transcription_completed",
        "claims_extraction": "claims_extracted",
        "entity_resolution": "entity_resolution_completed",
        "draft_generation": "drafts_generated",
    }
    items: list[dict[str, Any]] = []
    for n, (artifact, org, stage, start, end, cost) in enumerate(executions):
        common = {"artifact_id": artifact, "organization_id": org, "pipeline_stage": stage}
        items.append({"event_id": f"j-{n}-s", "event_type": f"{stage}_started", "timestamp": start, **common})
        items.append(
            {
                "event_id": f"j-{n}-e",
                "event_type": endings[stage],
                "timestamp": end,
                "duration_ms": end - start,
                "metadata": {"ai_model": "model-a", "ai_cost_usd": cost},
                **common,
            }
        )
    return [
        orjson.dumps({"events": items[i : i + EVENTS_PER_REQUEST]})
        for i in range(0, len(items), EVENTS_PER_REQUEST)
    ]


def _post_all(
    base: str, key: str, path: str, content_type: str, bodies: list[bytes], concurrency: int
) -> float:
    """Seconds to send every body (``concurrency`` at a time), each answered after its commit."""
    work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    for body in bodies:
        work.put(body)
    for _ in range(concurrency):
        work.put(None)
    failures: list[str] = []

    def worker() -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            while (body := work.get()) is not None:
                reply = http.post(path, content=body)
                if reply.status_code != 200 or (
                    content_type == "application/json" and reply.json().get("rejected")
                ):
                    failures.append(reply.text[:200])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert not failures, failures[:3]
    return elapsed


def _rate(
    backend: str, path: str, content_type: str, bodies: list[bytes], executions: int
) -> tuple[float, int]:
    """Stage executions per second through ``path``, and how many events were stored."""
    with fresh_database(backend) as url:
        key = ingest_key(url)
        with running_server(url) as base:
            pin_load()
            try:
                seconds = _post_all(base, key, path, content_type, bodies, concurrency=4)
            finally:
                unpin()
        svc = services_for(url)
        with svc.db.read() as conn:
            stored = count_events(conn)
        svc.stop()
    return executions / seconds, stored


def bench_ingest_otlp(backend: str, sizes: Sizes) -> list[Row]:
    count = sizes.otlp_spans
    executions = _executions(count, SystemClock().now_ms())
    protobuf = _protobuf_bodies(executions)
    as_json = _json_bodies(executions)
    otlp_rate, otlp_stored = _rate(backend, "/otlp/v1/traces", "application/x-protobuf", protobuf, count)
    json_rate, json_stored = _rate(backend, "/v1/events", "application/json", as_json, count)
    assert otlp_stored == json_stored == 2 * count, (otlp_stored, json_stored)
    ratio = otlp_rate / json_rate
    return [
        Row(
            "ingest_otlp",
            otlp_rate,
            f"stage spans/s ({count:,}, {SPANS_PER_REQUEST} a request)",
            "the same executions as JSON events",
            json_rate,
            ratio,
            ">= 0.8x the JSON path",
            ratio >= 0.8,
        )
    ]
