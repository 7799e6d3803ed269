"""``/v1/metrics``: live counters (SPEC 5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.render import realtime_out
from voicemon.api.schemas import ErrorReply, RealtimeOut
from voicemon.domain.access import Role, require_role

router = APIRouter(prefix="/v1/metrics", tags=["metrics"])


@router.get(
    "/realtime",
    response_model=RealtimeOut,
    responses={403: {"model": ErrorReply}},
    summary="Counters of the last 60 minutes, platform-wide or for one organization",
)
def realtime(
    services: ServicesDep,
    principal: PrincipalDep,
    organization_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> JSONResponse:
    require_role(principal, Role.VIEWER, Role.STAFF)
    body: dict[str, Any] = realtime_out(services.queries.realtime(principal, organization_id))
    # Returned as is: the platform-wide reply omits organization_id instead of carrying null.
    return JSONResponse(body)
