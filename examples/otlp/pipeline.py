"""A voice-note pipeline instrumented with OpenTelemetry only (no voicemon package).

The stock OTLP/HTTP exporter is configured by the environment alone:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8000/otlp
    OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20$KEY"

Each stage is one span named after the stage; ``voicemon.*`` attributes say which note it is. Needs
``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http``.
"""

import os
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("voice-notes")


def handle_note(note_id: str, organization_id: str) -> None:
    ids = {"voicemon.artifact_id": note_id, "voicemon.organization_id": organization_id}
    with tracer.start_as_current_span("receipt", attributes={**ids, "voicemon.event_type": "artifact_received"}):
        pass
    with tracer.start_as_current_span("transcription", attributes={**ids, "gen_ai.request.model": "whisper-1"}) as span:
        time.sleep(0.12)
        span.set_attribute("gen_ai.usage.cost", 0.0061)
    try:
        # An exception leaving the span marks it failed: voicemon stores claims_extraction_failed.
        with tracer.start_as_current_span("claims_extraction", attributes=ids) as span:
            time.sleep(0.08)
            if note_id.endswith("3"):
                raise TimeoutError("the model timed out")
            span.set_attribute("voicemon.metadata.claim_count", 3)
    except TimeoutError:
        pass


for n in range(1, 4):
    handle_note(f"py-note-{n}", os.environ.get("ORG", "org-python"))
provider.shutdown()
print("sent 3 notes")
