"""OTLP ingestion (SPEC 18) with the real OpenTelemetry SDK and its OTLP/HTTP exporter: a small pipeline
with nested spans, GenAI attributes and an exception reports to voicemon, and its events, artifact and
hourly snapshot say what happened; the same spans as hand-built OTLP/JSON give the same events; a re-sent
request changes nothing; refused spans and bad bodies store nothing."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from tests.api.test_prometheus import samples
from tests.conftest import NOW_MS, Api
from tests.helpers import assert_error, serve_in_thread
from voicemon.api import create_app
from voicemon.api.otlp_wire import JSON, PROTOBUF, decode_spans
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import MINUTE_MS, format_time
from voicemon.errors import StorageError
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage.events import count_events

NS = 1_000_000
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "otlp" / "pipeline.py"
BASE_NS = (NOW_MS - 20 * MINUTE_MS) * NS


class Captured(SpanExporter):
    """Keeps the finished spans, to encode them by hand."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += spans
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def run_pipeline(exporter: SpanExporter, artifact: str = "otel-1", org: str = "org-a") -> None:
    """A voice note through three stages: a root span that is none of voicemon's, a receipt, a
    transcription and a claims extraction with GenAI figures, and an entity resolution that raises."""
    provider = TracerProvider(resource=Resource.create({"service.name": "voice-pipeline"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("pipeline")
    ids = {"voicemon.artifact_id": artifact, "voicemon.organization_id": org, "session.id": "coach-7"}
    root = tracer.start_span("handle voice note", start_time=BASE_NS)
    inside = trace.set_span_in_context(root)

    def stage(name: str, start_s: float, end_s: float, **attributes: Any) -> Any:
        span = tracer.start_span(
            name, context=inside, attributes={**ids, **attributes}, start_time=BASE_NS + int(start_s * 1e9)
        )
        return span, BASE_NS + int(end_s * 1e9)

    received, at = stage("receipt", 0, 0, **{"voicemon.event_type": "artifact_received"})
    received.end(end_time=at)
    transcription, at = stage(
        "transcription",
        1,
        3.5,
        **{"gen_ai.request.model": "whisper-1", "gen_ai.usage.cost": 0.012, "gen_ai.usage.input_tokens": 90},
    )
    transcription.end(end_time=at)
    claims, at = stage(
        "claims-extraction",
        4,
        5.25,
        **{"gen_ai.response.model": "gpt-x", "llm.cost.total": 0.02, "voicemon.metadata.claim_count": 4},
    )
    claims.end(end_time=at)
    resolution, at = stage("resolve", 6, 7, **{"voicemon.stage": "entity_resolution"})
    try:
        raise TimeoutError("resolver timed out after 1 s")
    except TimeoutError as exc:
        resolution.record_exception(exc)
        resolution.set_status(Status(StatusCode.ERROR, "resolver timed out"))
    resolution.end(end_time=at)
    root.end(end_time=BASE_NS + 8 * 10**9)
    provider.shutdown()


@pytest.fixture
def served(api: Api) -> Iterator[str]:
    with serve_in_thread(create_app(services=api.services)) as url:
        yield url


def _events(api: Api, artifact: str = "otel-1") -> list[dict[str, Any]]:
    reply = api.call("GET", f"/v1/events?artifact_id={artifact}&limit=500")
    assert reply.status_code == 200, reply.text
    return sorted(reply.json()["items"], key=lambda e: e["event_id"])


def test_a_stock_exporter_reports_a_pipeline_down_to_the_snapshot(api: Api, served: str) -> None:
    key = api.key("ingest", "org-a")
    exporter = OTLPSpanExporter(
        endpoint=f"{served}/otlp/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )
    run_pipeline(exporter)

    events = {e["event_type"]: e for e in _events(api)}
    assert set(events) == {
        "artifact_received",
        "transcription_started",
        "transcription_completed",
        "claims_extraction_started",
        "claims_extracted",
        "entity_resolution_started",
        "entity_resolution_failed",
    }
    assert {e["organization_id"] for e in events.values()} == {"org-a"}
    assert {e["coach_user_id"] for e in events.values()} == {"coach-7"}
    done = events["transcription_completed"]
    assert done["duration_ms"] == 2500.0
    assert done["timestamp"] == format_time(NOW_MS - 20 * MINUTE_MS + 3500)
    assert done["metadata"] == {"ai_model": "whisper-1", "ai_cost_usd": 0.012, "input_tokens": 90}
    assert events["claims_extracted"]["duration_ms"] == 1250.0
    assert events["claims_extracted"]["metadata"]["claim_count"] == 4
    failed = events["entity_resolution_failed"]
    assert (failed["error_code"], failed["error_message"]) == ("TimeoutError", "resolver timed out")
    assert failed["duration_ms"] == 1000.0

    artifact = api.call("GET", "/v1/artifacts/otel-1").json()
    assert (artifact["status"], artifact["failed_stage"]) == ("failed", "entity_resolution")
    assert artifact["total_ai_cost_usd"] == pytest.approx(0.032)

    hour = api.call("GET", "/v1/metrics/history?period=hourly&organization_id=org-a").json()["items"][-1]
    stages = {s["stage"]: s for s in hour["stages"]}
    assert stages["transcription"]["latency_ms"]["count"] == 1
    assert stages["transcription"]["latency_ms"]["p50"] == pytest.approx(2500, rel=0.01)
    assert stages["entity_resolution"]["failed"] == 1
    assert hour["total_claims_extracted"] == 4
    assert hour["total_ai_cost_usd"] == pytest.approx(0.032)

    found = samples(api.call("GET", "/metrics").text)
    assert found[("voicemon_otlp_spans_total", (("outcome", "accepted"),))] == 4
    assert found[("voicemon_otlp_spans_total", (("outcome", "ignored"),))] == 1


def _json_body(spans: Sequence[ReadableSpan]) -> bytes:
    """The spans as OTLP/JSON, by hand: hex ids, integer enums, int64 as strings."""

    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": str(v)}

    def attributes(attrs: Any) -> list[dict[str, Any]]:
        return [{"key": k, "value": value(v)} for k, v in (attrs or {}).items()]

    out = []
    for s in spans:
        assert s.context is not None
        out.append(
            {
                "traceId": format(s.context.trace_id, "032x"),
                "spanId": format(s.context.span_id, "016x"),
                "name": s.name,
                "kind": 1,
                "startTimeUnixNano": str(s.start_time),
                "endTimeUnixNano": str(s.end_time),
                "attributes": attributes(s.attributes),
                "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in s.events],
                "status": {"code": s.status.status_code.value, "message": s.status.description or ""},
            }
        )
    resource = attributes(spans[0].resource.attributes)
    body = {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": out}]}]}
    return orjson.dumps(body)


def _post(api: Api, body: bytes, content_type: str, key: str | None = None, **headers: str) -> Any:
    return api.call(
        "POST", "/otlp/v1/traces", key, content=body, headers={"Content-Type": content_type, **headers}
    )


def test_the_same_spans_as_json_give_identical_events(api: Api) -> None:
    captured = Captured()
    run_pipeline(captured)
    protobuf = encode_spans(captured.spans).SerializeToString()
    as_json = _json_body(captured.spans)
    assert decode_spans(as_json, JSON) == decode_spans(protobuf, PROTOBUF)

    reply = _post(api, as_json, JSON)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == JSON
    assert reply.json() == {}
    from_json = _events(api)
    assert len(from_json) == 7
    again = _post(api, protobuf, PROTOBUF)
    assert again.status_code == 200, again.text
    assert again.headers["content-type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(again.content).HasField("partial_success")
    assert _events(api) == from_json, "the protobuf spans are the JSON spans: the same event ids"


def test_a_resent_request_changes_nothing(api: Api) -> None:
    captured = Captured()
    run_pipeline(captured)
    body = gzip.compress(encode_spans(captured.spans).SerializeToString())
    assert _post(api, body, PROTOBUF, **{"Content-Encoding": "gzip"}).status_code == 200
    before = (_events(api), api.call("GET", "/v1/artifacts/otel-1").json(), _hour(api))
    for _ in range(2):
        assert _post(api, body, PROTOBUF, **{"Content-Encoding": "gzip"}).status_code == 200
    assert (_events(api), api.call("GET", "/v1/artifacts/otel-1").json(), _hour(api)) == before


def _hour(api: Api) -> Any:
    items = api.call("GET", "/v1/metrics/history?period=hourly").json()["items"]
    return [{k: v for k, v in item.items() if k != "computed_at"} for item in items]


def test_refused_spans_are_counted_and_store_nothing(api: Api) -> None:
    captured = Captured()
    run_pipeline(captured, artifact="good", org="org-a")
    run_pipeline(captured, artifact="theirs", org="org-b")
    spans = [s for s in captured.spans if s.name == "transcription"]
    good, theirs = spans
    missing = _json_body([good]).replace(b'"voicemon.artifact_id"', b'"voicemon.other_id"')
    key = api.key("ingest", "org-a")
    mixed = orjson.loads(_json_body([good, theirs]))
    mixed["resourceSpans"][0]["scopeSpans"][0]["spans"] += orjson.loads(missing)["resourceSpans"][0][
        "scopeSpans"
    ][0]["spans"]
    reply = _post(api, orjson.dumps(mixed), JSON, key)
    assert reply.status_code == 200, reply.text
    partial = reply.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "organization_id" in partial["errorMessage"]
    assert "voicemon.artifact_id is required" in partial["errorMessage"]
    assert {e["artifact_id"] for e in api.call("GET", "/v1/events?limit=500").json()["items"]} == {"good"}
    found = samples(api.call("GET", "/metrics").text)
    assert found[("voicemon_otlp_spans_total", (("outcome", "rejected"),))] == 2


def _truncated_gzip(data: bytes) -> bytes:
    """A gzip stream cut before its end (no trailer): it must not read as a shorter request."""
    deflate = zlib.compressobj(wbits=31)
    return deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH)


def _many_spans(count: int) -> bytes:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "x"}
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span] * count}]}]})


def test_any_otlp_json_integer_is_read_even_a_negative_one(api: Api) -> None:
    body = orjson.loads(_many_spans(1))
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "http.response.delta", "value": {"intValue": "-5"}}
    ]
    reply = _post(api, orjson.dumps(body), JSON)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}, "a span that is not voicemon's is ignored, not rejected"


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "code"),
    [
        (b"\xff\xff\xff", PROTOBUF, {}, 400, "invalid_otlp"),
        (b"{not json", JSON, {}, 400, "invalid_json"),
        (b'{"resourceSpans": 7}', JSON, {}, 400, "invalid_otlp"),
        (b"\x1f\x8b\x08garbage", PROTOBUF, {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
        (gzip.compress(b"\0" * (20 * 1024 * 1024)), PROTOBUF, {"Content-Encoding": "gzip"}, 413, None),
        (b"\0" * (9 * 1024 * 1024), PROTOBUF, {}, 413, "payload_too_large"),
        (b"{}", "text/plain", {}, 415, "unsupported_media_type"),
        (b"{}", JSON, {"Content-Encoding": "br"}, 415, "unsupported_media_type"),
        (_truncated_gzip(b'{"resourceSpans": []}'), JSON, {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
        (_many_spans(10_001), JSON, {}, 413, "too_many_spans"),
    ],
    ids=[
        "protobuf",
        "json",
        "shape",
        "gzip",
        "gzip-bomb",
        "oversized",
        "content-type",
        "encoding",
        "truncated-gzip",
        "too-many-spans",
    ],
)
def test_a_bad_body_gets_its_status_and_stores_nothing(
    api: Api, body: bytes, content_type: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    assert_error(_post(api, body, content_type, **headers), status, code)
    with api.services.db.read() as conn:
        assert count_events(conn) == 0


def test_only_writers_may_send_traces(api: Api) -> None:
    assert_error(_post(api, b"", PROTOBUF, key=""), 401, "missing_key")
    assert_error(_post(api, b"", PROTOBUF, key=api.key("viewer")), 403, "forbidden_role")


@pytest.fixture
def live_api(db_url: str) -> Iterator[Api]:
    """An API on the real clock: the example's spans carry the time they ran at."""
    services = Services(Settings(database_url=db_url, key_cache_s=0))
    services.start()
    try:
        with TestClient(create_app(services=services)) as client:
            yield Api(client, services, services.keys.create(SYSTEM, "staff", None, "live").secret)
    finally:
        services.stop()


def test_the_python_example_reports_with_nothing_but_the_environment(live_api: Api) -> None:
    """examples/otlp/pipeline.py, as the README shows it: the stock exporter, configured by OTEL_* alone."""
    api = live_api
    with serve_in_thread(create_app(services=api.services)) as served:
        _run_example(api, served)
    failed = {e["event_type"]: e for e in _events(api, "py-note-3")}["claims_extraction_failed"]
    assert (failed["organization_id"], failed["error_code"]) == ("org-py", "TimeoutError")
    for n in (1, 2):
        kinds = [e["event_type"] for e in _events(api, f"py-note-{n}")]
        assert sorted(kinds) == sorted(NOTE_EVENTS)


NOTE_EVENTS = [
    "artifact_received",
    "transcription_started",
    "transcription_completed",
    "claims_extraction_started",
    "claims_extracted",
]


def _run_example(api: Api, served: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VOICEMON_"))},
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"{served}/otlp",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{api.key('ingest', 'org-py')}",
        "ORG": "org-py",
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_database_away_is_503_with_retry_after(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def away(*_: Any) -> Any:
        raise StorageError("database write failed: OperationalError")

    monkeypatch.setattr(api.services, "ingest_spans", away)
    reply = _post(api, orjson.dumps({"resourceSpans": []}), JSON)
    assert_error(reply, 503, "storage_unavailable")
    assert reply.headers["retry-after"] == "5"
