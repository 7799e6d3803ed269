// A voice-note pipeline instrumented with OpenTelemetry only. The stock OTLP/HTTP exporter is
// configured by the environment alone:
//   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8000/otlp
//   OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20$KEY"
// Each stage is one span named after the stage; voicemon.* attributes say which note it is.
import { SpanStatusCode, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

const provider = new NodeTracerProvider({
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});
provider.register();
const tracer = trace.getTracer("voice-notes");
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function stage(name, ids, attributes, work) {
  await tracer.startActiveSpan(name, { attributes: { ...ids, ...attributes } }, async (span) => {
    try {
      await work(span);
    } catch (error) {
      span.recordException(error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    } finally {
      span.end();
    }
  });
}

async function handleNote(noteId, organizationId) {
  const ids = { "voicemon.artifact_id": noteId, "voicemon.organization_id": organizationId };
  await stage("receipt", ids, { "voicemon.event_type": "artifact_received" }, async () => {});
  await stage("transcription", ids, { "gen_ai.request.model": "whisper-1" }, async (span) => {
    await sleep(120);
    span.setAttribute("gen_ai.usage.cost", 0.0061);
  });
  await stage("claims_extraction", ids, { "gen_ai.request.model": "gpt-4o-mini" }, async (span) => {
    await sleep(80);
    if (noteId.endsWith("3")) throw new Error("the model timed out");
    span.setAttribute("gen_ai.usage.input_tokens", 812);
    span.setAttribute("voicemon.metadata.claim_count", 3);
  });
}

for (let n = 1; n <= 3; n++) await handleNote(`node-note-${n}`, process.env.ORG ?? "org-node");
await provider.shutdown();
console.log("sent 3 notes");
