"""``/v1/artifacts``: lists of artifacts and one artifact's state and timeline (SPEC 4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.params import LimitQuery
from voicemon.api.render import artifact_out, event_out
from voicemon.api.schemas import ArtifactDetailOut, ArtifactPage, ErrorReply
from voicemon.domain.access import Role, require_role

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

StatusFilter = Literal[
    "received", "transcribing", "transcribed", "processing", "completed", "failed", "active", "stuck"
]


@router.get("", response_model=ArtifactPage, summary="List artifacts, newest received first")
def list_artifacts(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    status: StatusFilter | None = None,
    organization_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> dict[str, Any]:
    require_role(principal, Role.VIEWER, Role.STAFF)
    page = services.queries.list_artifacts(principal, status, organization_id, cursor, limit)
    return {"items": [artifact_out(s, stuck) for s, stuck in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/{artifact_id}",
    response_model=ArtifactDetailOut,
    responses={404: {"model": ErrorReply}},
    summary="One artifact: summary, timeline (oldest first) and retries",
)
def get_artifact(
    services: ServicesDep,
    principal: PrincipalDep,
    artifact_id: Annotated[str, Path(min_length=1, max_length=128)],
) -> dict[str, Any]:
    require_role(principal, Role.VIEWER, Role.STAFF)
    detail = services.queries.artifact(principal, artifact_id)
    body = artifact_out(detail.summary, detail.stuck)
    body["timeline"] = [event_out(e) for e in detail.timeline]
    body["retries"] = []
    return body
