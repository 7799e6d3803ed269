"""OTLP/HTTP trace bodies in and replies out (SPEC 18): protobuf and OTLP/JSON, optionally gzipped.

Protobuf is decoded with ``opentelemetry-proto``. OTLP/JSON is read by hand, following the OTLP
specification's JSON rules: trace and span ids are hex (not base64, which is how the generic protobuf
JSON codec would read them, giving 24-byte trace ids), enums are integers (their names are tolerated),
64-bit integers may be strings, keys are lowerCamelCase (snake_case tolerated). Both give the same
:class:`~voicemon.domain.otlp.Span` values, so they map to the same events.
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from voicemon.domain.otlp import STATUS_ERROR, STATUS_OK, STATUS_UNSET, Span
from voicemon.errors import BadRequest, PayloadTooLarge, VoicemonError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_DECODED_BYTES = 16 * 1024 * 1024
"""The largest body after decompression; checked while decompressing, so a gzip bomb costs nothing."""

_INTEGER = re.compile(r"-?[0-9]+")
_STATUS_NAMES = {
    "STATUS_CODE_UNSET": STATUS_UNSET,
    "STATUS_CODE_OK": STATUS_OK,
    "STATUS_CODE_ERROR": STATUS_ERROR,
}


class UnsupportedMediaType(VoicemonError):
    code = "unsupported_media_type"
    http_status = 415


def media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json`` from a Content-Type header; raises 415."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Content-Type must be {PROTOBUF} or {JSON}, not {kind or 'missing'}", field="Content-Type"
        )
    return kind


def decoded_body(body: bytes, content_encoding: str | None) -> bytes:
    """The body, gunzipped when so encoded, at most :data:`MAX_DECODED_BYTES`; raises 413, 415 or 400."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        data = body
    elif encoding == "gzip":
        data = _gunzip(body)
    else:
        raise UnsupportedMediaType(
            f"Content-Encoding must be gzip or identity, not {encoding}", field="Content-Encoding"
        )
    if len(data) > MAX_DECODED_BYTES:
        raise PayloadTooLarge(f"the body is over {MAX_DECODED_BYTES} bytes")
    return data


def _gunzip(body: bytes) -> bytes:
    """Every member of a gzip stream, whole: a truncated stream is refused, not read as a shorter one."""
    pieces: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            piece = inflater.decompress(rest, MAX_DECODED_BYTES + 1 - size)
        except zlib.error as exc:
            raise BadRequest(f"is not valid gzip: {exc}", code="invalid_gzip", field="body") from None
        size += len(piece)
        if size > MAX_DECODED_BYTES or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the decompressed body is over {MAX_DECODED_BYTES} bytes")
        if not inflater.eof:
            raise BadRequest("is not valid gzip: the stream ends early", code="invalid_gzip", field="body")
        pieces.append(piece)
        rest = inflater.unused_data
        if not rest:
            return b"".join(pieces)


def decode_spans(data: bytes, kind: str) -> list[Span]:
    """Every span of an ``ExportTraceServiceRequest``; raises :class:`BadRequest` if it does not decode."""
    return list(_protobuf_spans(data) if kind == PROTOBUF else _json_spans(data))


def encode_reply(kind: str, rejected: int, message: str) -> bytes:
    """An ``ExportTraceServiceResponse``, with ``partial_success`` only when spans were rejected."""
    if kind == PROTOBUF:
        reply = ExportTraceServiceResponse()
        if rejected:
            reply.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
            )
        return reply.SerializeToString()
    body: dict[str, Any] = {}
    if rejected:
        body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
    return orjson.dumps(body)


# --- protobuf ------------------------------------------------------------------------------------------


def _protobuf_spans(data: bytes) -> Iterator[Span]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise BadRequest(
            f"is not an OTLP ExportTraceServiceRequest: {exc}", code="invalid_otlp", field="body"
        ) from None
    for resource_spans in request.resource_spans:
        resource = {kv.key: _any(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                yield Span(
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    name=s.name,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    status_code=s.status.code,
                    status_message=s.status.message,
                    attributes={kv.key: _any(kv.value) for kv in s.attributes},
                    resource=resource,
                    exceptions=[
                        {kv.key: _any(kv.value) for kv in e.attributes}
                        for e in s.events
                        if e.name == "exception"
                    ],
                )


def _any(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()  # as OTLP/JSON carries bytes
    if which == "double_value":
        return _double(value.double_value)
    return getattr(value, which)


# --- OTLP/JSON -----------------------------------------------------------------------------------------


def _json_spans(data: bytes) -> Iterator[Span]:
    try:
        request = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"is not valid JSON: {exc}", code="invalid_json", field="body") from None
    try:
        for resource_spans in _list(request, "resourceSpans"):
            resource = _attributes(_get(resource_spans, "resource") or {})
            for scope_spans in _list(resource_spans, "scopeSpans"):
                for s in _list(scope_spans, "spans"):
                    status = _get(s, "status") or {}
                    yield Span(
                        trace_id=_hex(_get(s, "traceId")),
                        span_id=_hex(_get(s, "spanId")),
                        name=str(_get(s, "name") or ""),
                        start_ns=_int(_get(s, "startTimeUnixNano")),
                        end_ns=_int(_get(s, "endTimeUnixNano")),
                        status_code=_status(_get(status, "code")),
                        status_message=str(_get(status, "message") or ""),
                        attributes=_attributes(s),
                        resource=resource,
                        exceptions=[
                            _attributes(e) for e in _list(s, "events") if _get(e, "name") == "exception"
                        ],
                    )
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(
            f"is not an OTLP/JSON trace request: {exc}", code="invalid_otlp", field="body"
        ) from None


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _get(obj: Any, name: str) -> Any:
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected an object where {name} is")
    return obj[name] if name in obj else obj.get(_snake(name))


def _list(obj: Any, name: str) -> list[Any]:
    found = _get(obj, name)
    if found is None:
        return []
    if not isinstance(found, list):
        raise TypeError(f"{name} must be a list")
    return found


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a time must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if value is None:
        return 0
    raise TypeError(f"{value!r} is not an integer")


def _double(value: Any) -> float | None:
    """A double as a finite float (JSON may carry it as a string); NaN and infinities as no value."""
    number = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    return number if number is not None and math.isfinite(number) else None


def _hex(value: Any) -> str:
    """An id as lowercase hex; the mapping refuses a span whose ids are not hex of the right size."""
    return value.lower() if isinstance(value, str) else ""


def _status(value: Any) -> int:
    if isinstance(value, str):
        return _STATUS_NAMES.get(value, int(value) if value.isdigit() else STATUS_UNSET)
    return _int(value) if value is not None else STATUS_UNSET


def _attributes(obj: Any) -> dict[str, Any]:
    return {str(_get(kv, "key")): _json_any(_get(kv, "value")) for kv in _list(obj, "attributes")}


def _json_any(value: Any) -> Any:
    if not isinstance(value, Mapping) or not value:
        return None
    (kind, inner), *_ = value.items()
    if kind in ("stringValue", "string_value", "boolValue", "bool_value"):
        return inner
    if kind in ("doubleValue", "double_value"):
        return _double(inner)
    if kind in ("intValue", "int_value"):
        return _int(inner)
    if kind in ("arrayValue", "array_value"):
        return [_json_any(v) for v in _list(inner, "values")]
    if kind in ("kvlistValue", "kvlist_value"):
        return {str(_get(kv, "key")): _json_any(_get(kv, "value")) for kv in _list(inner, "values")}
    if kind in ("bytesValue", "bytes_value"):
        return inner
    return None
