"""``/v1/exports``: events, artifacts, snapshot history and the organization breakdown as files (SPEC 17).

Each export takes the filters of the list or range query it mirrors and is allowed exactly when that
query is. The caller and the filters are checked before the reply starts, so a refusal is an ordinary
error reply. The file then streams as it is read (chunked, in constant memory). Should a read fail
after the first bytes went out, the connection is closed without the chunked body's final piece, so
every HTTP client reports an incomplete body (curl exits 18, httpx raises ``RemoteProtocolError``) and
no one takes a short file for a whole one. Columns: ``docs/exports.md``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.routes_artifacts import FailedStage, OrganizationQuery, StatusFilter
from voicemon.api.routes_events import EventFilterDep
from voicemon.api.routes_metrics import OrgQuery, RangeDep
from voicemon.api.schemas import ErrorReply
from voicemon.domain.exports import ExportFormat
from voicemon.domain.timeutil import format_time
from voicemon.service import Services
from voicemon.service.exports import Export

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/exports", tags=["exports"])

FormatQuery = Annotated[
    ExportFormat, Query(alias="format", description="csv (with a header line) or jsonl (JSON Lines)")
]
_FILE = {"type": "string", "description": "the file; its columns are listed in docs/exports.md"}
FILE_REPLY: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file, streamed",
        "content": {"text/csv": {"schema": _FILE}, "application/x-ndjson": {"schema": _FILE}},
    },
    400: {"model": ErrorReply},
    403: {"model": ErrorReply},
    422: {"model": ErrorReply},
}


def _next(chunks: Generator[bytes, None, None]) -> bytes | None:
    return next(chunks, None)


async def _stream(services: Services, export: Export, fmt: ExportFormat) -> AsyncIterator[bytes]:
    """The pieces of the file, each read on a worker thread; the read is closed whatever ends the
    stream (its end, a failure, or the client going away)."""
    rows = 0

    def counted(n: int) -> None:
        nonlocal rows
        rows += n

    chunks = export.chunks(fmt, counted)
    outcome = "aborted"
    try:
        while (chunk := await run_in_threadpool(_next, chunks)) is not None:
            yield chunk
        outcome = "completed"
    except Exception:
        logger.exception(
            "export aborted",
            extra={"action": "export_aborted", "kind": export.kind.value, "rows": rows},
        )
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(chunks.close)
        services.telemetry.exports.labels(export.kind.value, fmt.value, outcome).inc()
        services.telemetry.export_rows.labels(export.kind.value).inc(rows)


def _file(services: Services, export: Export, fmt: ExportFormat) -> StreamingResponse:
    stamp = format_time(services.clock.now_ms())[:19].replace("-", "").replace(":", "")
    name = f"voicemon-{export.kind.value}-{stamp}Z.{fmt.value}"
    return StreamingResponse(
        _stream(services, export, fmt),
        media_type=fmt.media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=FILE_REPLY,
    summary="The events of the event list's filters as a file, oldest first",
)
def export_events(
    services: ServicesDep, principal: PrincipalDep, fmt: FormatQuery, f: EventFilterDep
) -> StreamingResponse:
    return _file(services, services.exports.events(principal, f), fmt)


@router.get(
    "/artifacts",
    response_class=StreamingResponse,
    responses=FILE_REPLY,
    summary="The artifacts of the artifact list's filters as a file, oldest listed first",
)
def export_artifacts(
    services: ServicesDep,
    principal: PrincipalDep,
    fmt: FormatQuery,
    status: StatusFilter | None = None,
    organization_id: OrganizationQuery = None,
    failed_stage: Annotated[
        FailedStage | None, Query(description="only artifacts whose last failure was in this stage")
    ] = None,
) -> StreamingResponse:
    export = services.exports.artifacts(principal, status, organization_id, failed_stage)
    return _file(services, export, fmt)


@router.get(
    "/history",
    response_class=StreamingResponse,
    responses=FILE_REPLY,
    summary="The snapshot history of one scope as a file, oldest period first, snapshot fields flattened",
)
def export_history(
    services: ServicesDep,
    principal: PrincipalDep,
    r: RangeDep,
    fmt: FormatQuery,
    organization_id: OrgQuery = None,
) -> StreamingResponse:
    return _file(services, services.exports.history(principal, r, organization_id), fmt)


@router.get(
    "/orgs",
    response_class=StreamingResponse,
    responses=FILE_REPLY,
    summary="The organization breakdown of a range as a file (staff)",
)
def export_orgs(
    services: ServicesDep, principal: PrincipalDep, r: RangeDep, fmt: FormatQuery
) -> StreamingResponse:
    return _file(services, services.exports.orgs(principal, r), fmt)
