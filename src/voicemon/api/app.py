"""The FastAPI application factory and the one place errors become HTTP replies."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicemon import __version__
from voicemon.api import (
    routes_alerts,
    routes_artifacts,
    routes_events,
    routes_exports,
    routes_jobs,
    routes_metrics,
    routes_orgs,
    routes_otlp,
)
from voicemon.api.bodies import not_json_at
from voicemon.api.deps import reject_nul_characters
from voicemon.api.docs import install_docs
from voicemon.api.edge import PRINCIPAL_STATE, RequestEdge, is_protected
from voicemon.api.schemas import ErrorReply, EventBatchIn, EventIn, HealthOut
from voicemon.clock import Clock
from voicemon.domain.access import Principal
from voicemon.errors import AuthError, VoicemonError
from voicemon.jobs import Scheduler, build_runner
from voicemon.service import Services
from voicemon.service.telemetry import CONTENT_TYPE as TELEMETRY_CONTENT_TYPE
from voicemon.service.telemetry import route_of
from voicemon.settings import Settings
from voicemon.web import install_web

logger = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _error_reply(exc: VoicemonError) -> JSONResponse:
    """The reply to ``exc``, for the handler below and for the request edge in front of the routes."""
    status = exc.http_status
    message = f"{exc.field}: {exc.message}" if exc.field else exc.message
    if status >= 500:
        logger.error("request failed", extra={"action": "request_failed", "code": exc.code})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _error(status, exc.code, message, headers)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    services: Services | None = None,
    run_scheduler: bool = False,
    run_dispatcher: bool = True,
    own_process: bool = False,
) -> FastAPI:
    """Build the app; its lifespan migrates the database, runs the ingest writer and, when asked, the
    job scheduler. ``own_process``: the app is the process (``voicemon serve``), so it may tune the
    process-wide garbage collector."""
    svc = services or Services(settings or Settings(), clock)
    runner = build_runner(svc)
    scheduler = Scheduler(runner, svc.settings.scheduler_poll_s) if run_scheduler else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.start(run_dispatcher=run_dispatcher)
        if scheduler is not None:
            scheduler.start()
        if own_process:
            # Everything loaded by now (modules, the app, pools) lives as long as the process. Frozen,
            # it leaves the collector's full passes, which otherwise stalled every request in flight
            # for 20 to 90 ms (measured at 500 requests/s).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            svc.stop()

    app = FastAPI(
        title="voicemon",
        version=__version__,
        description="Observability and operations for multi-tenant AI voice-note pipelines.",
        lifespan=lifespan,
        dependencies=[Depends(reject_nul_characters)],
        # /docs is served from the package's own files (api/docs.py); ReDoc would load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = svc
    # Before any route reads a body: the key, then the body's size and pace (api/edge.py).
    telemetry = svc.telemetry

    def observe(scope: Any, status: int, seconds: float) -> None:
        telemetry.http.labels(route_of(scope), scope["method"], str(status)).observe(seconds)

    app.add_middleware(
        RequestEdge,
        keys=svc.keys,
        error_reply=_error_reply,
        body_idle_timeout_s=svc.settings.body_idle_timeout_s,
        public_paths=frozenset({"/metrics"}) if svc.settings.metrics_public else frozenset(),
        observe=observe,
    )
    app.state.jobs = runner
    routers = (routes_events, routes_artifacts, routes_metrics, routes_orgs, routes_jobs, routes_alerts)
    for module in (*routers, routes_exports, routes_otlp):
        app.include_router(module.router)

    @app.get(
        "/healthz", response_model=HealthOut, tags=["health"], summary="Liveness and database reachability"
    )
    def healthz() -> JSONResponse:
        if svc.db.ping():
            return JSONResponse({"status": "ok", "database": "ok"})
        return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics: what this process did, and what the database says (cached 10 s)",
        response_class=PlainTextResponse,
        openapi_extra={"security": [{"HTTPBearer": []}]},
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "text format 0.0.4",
            },
            401: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}}},
            403: {
                "description": "an ingest key, or a key of one organization",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}},
            },
        },
    )
    def metrics(request: Request) -> Response:
        """A viewer or staff key of no organization, unless ``VOICEMON_METRICS_PUBLIC`` opens it."""
        principal = getattr(request.state, PRINCIPAL_STATE, None)
        if not svc.settings.metrics_public and not isinstance(principal, Principal):
            raise AuthError("an API key is required: Authorization: Bearer <key>", code="missing_key")
        body = svc.telemetry.scrape(principal if isinstance(principal, Principal) else None)
        return Response(body, media_type=TELEMETRY_CONTENT_TYPE)

    install_docs(app)
    install_web(app, svc)
    _install_error_handlers(app)
    _install_openapi(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoicemonError)
    async def on_voicemon_error(_: Request, exc: VoicemonError) -> JSONResponse:
        return _error_reply(exc)

    @app.exception_handler(RequestValidationError)
    async def on_request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        unread = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if unread is not None:
            # FastAPI reports a body it could not decode as a validation error at its offset ("9: JSON
            # decode error"); it is a body that cannot be read at all, refused as POST /v1/events does.
            reason = str(unread.get("ctx", {}).get("error", "cannot be decoded"))
            loc = tuple(unread.get("loc", ()))
            return _error_reply(not_json_at(reason, exc.body, loc[-1] if loc else None))
        problems = []
        for err in errors:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
            problems.append(f"{where or 'body'}: {err.get('msg', 'is invalid')}")
        return _error(422, "invalid_request", "; ".join(problems) or "the request is invalid")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", extra={"action": "request_crashed"})
        return _error(500, "internal_error", "an unexpected error occurred; it has been logged")


# The errors any operation can answer, besides those its route declares (SPEC 7): the request edge
# (api/edge.py) bounds every request, and the app-wide parameter check (api/deps.py) reads every query.
_ERRORS_OF_EVERY_OPERATION = {
    "400": "Malformed: a Content-Length that is not a number; on /v1 also a body that cannot be read, or a"
    " cursor this list did not hand out for these filters (`invalid_cursor`)",
    "408": "The body stopped arriving before it was complete",
    "413": "The body is over the endpoint's limit (5 MiB for POST /v1/events, 64 KiB elsewhere)",
    "422": "A parameter or the body is invalid",
}
# And those of every operation that needs a key.
_ERRORS_OF_EVERY_PROTECTED_OPERATION = {
    "401": "No API key, or an unknown or revoked one",
    "403": "The key's role or organization does not allow it",
    "503": "The database is unreachable, or the server is at its connection limit",
}
_ERROR_REPLY_REF = {"$ref": "#/components/schemas/ErrorReply"}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(_ERROR_REPLY_REF)}}}


def _document_errors(schema: dict[str, Any]) -> None:
    """Make the document tell the truth about error replies: every 422 is our ErrorReply (the handler of
    RequestValidationError answers with it, not FastAPI's HTTPValidationError), every operation lists
    the errors the request edge and the shared handlers can give, and every key-protected one (none
    other: ``/healthz`` needs no key) 401, 403 and 503 too."""
    for path, item in schema["paths"].items():
        for operation in item.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _error_response(responses["422"].get("description", "Validation Error"))
            for status, description in _ERRORS_OF_EVERY_OPERATION.items():
                responses.setdefault(status, _error_response(description))
            if is_protected(path):
                for status, description in _ERRORS_OF_EVERY_PROTECTED_OPERATION.items():
                    responses.setdefault(status, _error_response(description))
                responses["401"]["headers"] = {
                    "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
                }
    health = schema["paths"].get("/healthz", {}).get("get")
    if health is not None:
        health["responses"].setdefault(
            "503",
            {
                "description": "The database is unreachable",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HealthOut"}}},
            },
        )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's validation models are left out of the document once nothing refers to them.
    unused = {name: components.pop(name) for name in _FASTAPI_VALIDATION_SCHEMAS if name in components}
    document = orjson.dumps(schema)
    for name, model in unused.items():
        if f'"#/components/schemas/{name}"'.encode() in document:
            components[name] = model


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _, defs = models_json_schema(
                [(EventIn, "validation"), (EventBatchIn, "validation"), (ErrorReply, "serialization")],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            _document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
