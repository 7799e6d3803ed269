"""``/v1/events``: ingestion (SPEC 3.5) and the event list."""

from __future__ import annotations

import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from voicemon.api.bodies import not_json
from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.params import CursorQuery, LimitQuery
from voicemon.api.render import event_out
from voicemon.api.schemas import ErrorReply, EventBatchIn, EventIn, EventPage, IngestReply
from voicemon.domain.model import EventType, Stage
from voicemon.domain.records import EventFilter
from voicemon.domain.timeutil import parse_time_text
from voicemon.errors import BadRequest, PayloadTooLarge
from voicemon.service.ingest import MAX_BATCH_EVENTS

router = APIRouter(prefix="/v1/events", tags=["events"])


# orjson decodes an integer literal beyond 64 bits as the nearest float, silently. Such a literal has at
# least 19 digits in a row, and decodes to an integral float of magnitude 2**63 or more: only then is the
# body decoded again, exactly, by the stdlib (the validator then refuses the integer, naming its field).
# Digit runs are found by mapping every digit to "0" (bytes.translate and ``in`` run in C: a fraction of
# the orjson decode, where a regular expression costs several times it).
_DIGITS_AS_ZERO = bytes(ord("0") if ord("0") <= b <= ord("9") else ord(" ") for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_INT64_FLOAT = 2.0**63


def _rounded_integer_in(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if abs(item) >= _INT64_FLOAT and item.is_integer():
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(body: bytes) -> Any:
    """The JSON body with every integer exactly as written; orjson on the fast path. Raises BadRequest."""
    try:
        decoded = orjson.loads(body)
        if _LONG_DIGIT_RUN in body.translate(_DIGITS_AS_ZERO) and _rounded_integer_in(decoded):
            # orjson accepted it, so it is strict JSON; the stdlib reads it alike, integers exactly.
            decoded = json.loads(body, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:  # orjson's is one too
        raise not_json(exc) from None
    except (ValueError, RecursionError) as exc:  # NaN or Infinity (stdlib path), or nested too deeply
        raise BadRequest(f"is not valid JSON: {exc}", code="invalid_json", field="body") from None
    return decoded


def _items(body: bytes) -> list[Any]:
    decoded = _decode(body)
    if isinstance(decoded, dict) and set(decoded) == {"events"}:
        batch = decoded["events"]
        if not isinstance(batch, list):
            raise BadRequest("events must be a list of event objects", code="invalid_batch")
        if len(batch) > MAX_BATCH_EVENTS:
            raise PayloadTooLarge(f"a batch holds at most {MAX_BATCH_EVENTS} events", code="batch_too_large")
        return batch
    if isinstance(decoded, dict):
        return [decoded]
    raise BadRequest('the body must be one event object or {"events": [...]}', code="invalid_body")


@router.post(
    "",
    response_model=IngestReply,
    responses={400: {"model": ErrorReply}, 413: {"model": ErrorReply}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/EventIn"},
                            {"$ref": "#/components/schemas/EventBatchIn"},
                        ]
                    }
                }
            },
        }
    },
    summary="Ingest one event or a batch of up to 1000",
)
async def post_events(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Each item is validated on its own. The reply comes after the accepted events are committed."""
    # The request edge (api/edge.py) has bounded the body to EVENTS_BODY_BYTES as it streamed in.
    items = _items(await request.body())
    result = await services.ingest(items, principal)
    body = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": [
            {
                "index": r.index,
                "event_id": r.event_id,
                "errors": [{"field": e.field, "code": e.code, "message": e.message} for e in r.errors],
            }
            for r in result.rejected
        ],
    }
    return Response(orjson.dumps(body), media_type="application/json")


def event_filter(
    event_type: EventType | None = None,
    pipeline_stage: Stage | None = None,
    organization_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    artifact_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    start: Annotated[str | None, Query(description="inclusive; RFC 3339 or epoch ms")] = None,
    end: Annotated[str | None, Query(description="exclusive; RFC 3339 or epoch ms")] = None,
) -> EventFilter:
    """The filters of the event list (and of its export), from the query string."""
    return EventFilter(
        event_type=event_type.value if event_type else None,
        pipeline_stage=pipeline_stage.value if pipeline_stage else None,
        organization_id=organization_id,
        artifact_id=artifact_id,
        start_ms=parse_time_text("start", start),
        end_ms=parse_time_text("end", end),
    )


EventFilterDep = Annotated[EventFilter, Depends(event_filter)]


@router.get("", response_model=EventPage, summary="List events, newest first")
def get_events(
    services: ServicesDep,
    principal: PrincipalDep,
    f: EventFilterDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    page = services.queries.list_events(principal, f, cursor, limit)
    return {"items": [event_out(e) for e in page.items], "next_cursor": page.next_cursor}


# Referenced from the request body above so that they appear in the OpenAPI components.
SCHEMA_MODELS = (EventIn, EventBatchIn)
