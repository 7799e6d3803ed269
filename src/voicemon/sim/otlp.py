"""The simulated pipeline reporting through OpenTelemetry instead of voicemon's SDK (``simulate --otlp``).

:class:`OtlpClient` has the SDK client's surface (``log_event``, ``flush``, ``close``, ``stats``), so the
simulator runs unchanged. It turns the event stream into the spans an instrumented pipeline would emit,
through the stock OpenTelemetry SDK and its OTLP/HTTP protobuf exporter:

- a stage's ``*_started`` opens a span; its completion or failure ends it, named after the stage, with
  the ending event's time, an ERROR status and ``error.type`` for a failure, and the metadata as GenAI
  attributes (``gen_ai.response.model``, ``gen_ai.usage.cost``) or ``voicemon.metadata.*``;
- every other event is a span of no length with ``voicemon.event_type``.

An OpenTelemetry span is exported only once it ends, so a stage that never ends (``--incident
stuck_artifacts``) is not seen at all this way: voicemon sees such a note stop after its previous stage,
and judges it stuck from there.

Only ``simulate --otlp`` imports this module: the rest of the simulator needs no OpenTelemetry package.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from voicemon.sdk import ClientStats

NS_PER_MS = 1_000_000
STARTED_SUFFIX = "_started"
# The ending events of each measured stage, as the event model names them.
ENDINGS = {
    "transcription_completed": "transcription",
    "transcription_failed": "transcription",
    "claims_extracted": "claims_extraction",
    "claims_extraction_failed": "claims_extraction",
    "entity_resolution_completed": "entity_resolution",
    "entity_needs_disambiguation": "entity_resolution",
    "entity_resolution_failed": "entity_resolution",
    "drafts_generated": "draft_generation",
    "draft_generation_failed": "draft_generation",
}
ID_ATTRIBUTES = ("artifact_id", "organization_id", "voice_note_id", "coach_user_id")


class OtlpClient:
    def __init__(self, url: str, key: str, *, max_queue: int = 500_000) -> None:
        self._exporter = _Counting(
            OTLPSpanExporter(
                endpoint=f"{url.rstrip('/')}/otlp/v1/traces", headers={"Authorization": f"Bearer {key}"}
            )
        )
        self._provider = TracerProvider(resource=Resource.create({"service.name": "voicemon-simulator"}))
        self._provider.add_span_processor(
            BatchSpanProcessor(self._exporter, max_queue_size=max_queue, schedule_delay_millis=500)
        )
        self._tracer = self._provider.get_tracer("voicemon.sim")
        self._open: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._queued = 0

    def log_event(self, event_type: str, *, timestamp: int, **fields: Any) -> None:
        """One event of the simulator, as part of a span (see the module docstring)."""
        with self._lock:
            self._queued += 1
            key = (fields.get("organization_id"), fields.get("artifact_id"))
            if event_type.endswith(STARTED_SUFFIX):
                started = event_type.removesuffix(STARTED_SUFFIX)
                self._open[(*key, started)] = self._tracer.start_span(
                    started, attributes=_attributes(fields), start_time=timestamp * NS_PER_MS
                )
                return
            stage = ENDINGS.get(event_type)
            span = self._open.pop((*key, stage), None) if stage else None
            if span is None:
                span = self._tracer.start_span(
                    event_type, attributes=_attributes(fields), start_time=timestamp * NS_PER_MS
                )
            self._finish(span, event_type, fields, timestamp)

    def _finish(self, span: Any, event_type: str, fields: dict[str, Any], ts: int) -> None:
        # Named on the span whatever it is: a stage span then ends with exactly this event (a completion,
        # a failure, or entity_needs_disambiguation), and any other span is this one event.
        span.set_attribute("voicemon.event_type", event_type)
        for key, value in (fields.get("metadata") or {}).items():
            if key == "ai_model":
                span.set_attribute("gen_ai.response.model", value)
            elif key == "ai_cost_usd":
                span.set_attribute("gen_ai.usage.cost", value)
            elif isinstance(value, str | bool | int | float):
                span.set_attribute(f"voicemon.metadata.{key}", value)
        if fields.get("error_code"):
            span.set_attribute("error.type", fields["error_code"])
        if event_type.endswith("_failed"):
            span.set_status(Status(StatusCode.ERROR, fields.get("error_message") or ""))
        span.end(end_time=ts * NS_PER_MS)

    def flush(self, timeout: float | None = 10.0) -> bool:
        return bool(self._provider.force_flush(int((timeout or 3600) * 1000)))

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._provider.shutdown()

    @property
    def stats(self) -> ClientStats:
        sent, failed = self._exporter.counts()
        return ClientStats(self._queued, sent, 0, failed, 0)


def _attributes(fields: dict[str, Any]) -> dict[str, Any]:
    out = {f"voicemon.{name}": fields[name] for name in ID_ATTRIBUTES if fields.get(name)}
    for name in ("previous_status", "new_status"):
        if fields.get(name):
            out[f"voicemon.{name}"] = fields[name]
    return out


class _Counting(SpanExporter):
    """The exporter, counting the spans it sent and those it gave up on."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._sent = 0
        self._failed = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._sent += len(spans)
        else:
            self._failed += len(spans)
        return result

    def counts(self) -> tuple[int, int]:
        return self._sent, self._failed

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))
