"""``POST /otlp/v1/traces``: OTLP/HTTP trace export (SPEC 18), so ``OTEL_EXPORTER_OTLP_ENDPOINT=$URL/otlp``
points any stock exporter at voicemon.

The reply follows the OTLP specification: 200 with an ``ExportTraceServiceResponse`` in the request's
encoding, sent only once the events of the accepted spans are committed, with ``partial_success``
counting the spans that map to no valid event (and why, for the first few); 400 for a body that does not
decode; 413 over the size limit (checked again after decompression) or over 10 000 spans; 415 for
another content type or encoding; 503 with ``Retry-After`` while the database is away (exporters retry
it). Errors carry the JSON error body of every other route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.otlp_wire import JSON, PROTOBUF, decode_spans, decoded_body, encode_reply, media_type
from voicemon.api.schemas import ErrorReply
from voicemon.errors import PayloadTooLarge, StorageError

router = APIRouter(tags=["otlp"])

RETRY_AFTER_S = 5
# Exporters send 512 spans a request by default; this bounds one request's writer transaction.
MAX_SPANS_PER_REQUEST = 10_000
SHOWN_REFUSALS = 5
_REQUEST = {"type": "string", "format": "binary", "description": "an OTLP ExportTraceServiceRequest"}
_REPLY = {"type": "string", "format": "binary", "description": "an OTLP ExportTraceServiceResponse"}


@router.post(
    "/otlp/v1/traces",
    response_class=Response,
    responses={
        200: {
            "description": "Committed; partial_success counts the spans that were not",
            "content": {PROTOBUF: {"schema": _REPLY}, JSON: {"schema": {"type": "object"}}},
        },
        400: {"model": ErrorReply},
        413: {"model": ErrorReply},
        415: {"model": ErrorReply},
        503: {"model": ErrorReply},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {PROTOBUF: {"schema": _REQUEST}, JSON: {"schema": {"type": "object"}}},
        }
    },
    summary="OTLP/HTTP traces: each stage span becomes its started and completed or failed events",
)
async def post_traces(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    kind = media_type(request.headers.get("content-type"))
    # The request edge has bounded the body as it arrived (api/edge.py); decompression is bounded here.
    data = decoded_body(await request.body(), request.headers.get("content-encoding"))
    spans = await run_in_threadpool(decode_spans, data, kind)
    if len(spans) > MAX_SPANS_PER_REQUEST:
        raise PayloadTooLarge(
            f"a request holds at most {MAX_SPANS_PER_REQUEST} spans, not {len(spans)}", code="too_many_spans"
        )
    try:
        report = await services.ingest_spans(spans, principal)
    except StorageError as exc:
        body: dict[str, Any] = {"error": {"code": exc.code, "message": exc.message}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    shown = [f"span {span_id}: {why}" for span_id, why in report.refused[:SHOWN_REFUSALS]]
    if len(report.refused) > SHOWN_REFUSALS:
        shown.append(f"and {len(report.refused) - SHOWN_REFUSALS} more")
    return Response(encode_reply(kind, len(report.refused), "; ".join(shown)), media_type=kind)
