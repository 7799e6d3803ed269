"""``/v1/artifacts``: lists of artifacts and one artifact's state and timeline (SPEC 4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.params import CursorQuery, LimitQuery
from voicemon.api.render import artifact_out, event_out, retry_out
from voicemon.api.schemas import ArtifactDetailOut, ArtifactPage, ErrorReply, RetryIn, RetryList, RetryOut

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

ArtifactPath = Annotated[str, Path(min_length=1, max_length=128)]
OrganizationQuery = Annotated[str | None, Query(min_length=1, max_length=128)]
# An artifact is named by its id and its organization: two organizations may use one id (decision 0012).
OwnerQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=128,
        description="the artifact's organization; needed only when several organizations use this id",
    ),
]

FailedStage = Literal["transcription", "claims_extraction", "entity_resolution", "draft_generation"]
StatusFilter = Literal[
    "received", "transcribing", "transcribed", "processing", "completed", "failed", "active", "stuck"
]


@router.get("", response_model=ArtifactPage, summary="List artifacts, newest received first")
def list_artifacts(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status: StatusFilter | None = None,
    organization_id: OrganizationQuery = None,
    failed_stage: Annotated[
        FailedStage | None, Query(description="only artifacts whose last failure was in this stage")
    ] = None,
) -> dict[str, Any]:
    page = services.queries.list_artifacts(principal, status, organization_id, cursor, limit, failed_stage)
    return {"items": [artifact_out(s, stuck) for s, stuck in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/{artifact_id}",
    response_model=ArtifactDetailOut,
    responses={404: {"model": ErrorReply}, 409: {"model": ErrorReply}},
    summary="One artifact: summary, timeline (oldest first) and retries",
)
def get_artifact(
    services: ServicesDep,
    principal: PrincipalDep,
    artifact_id: ArtifactPath,
    organization_id: OwnerQuery = None,
) -> dict[str, Any]:
    detail = services.queries.artifact(principal, artifact_id, organization_id)
    body = artifact_out(detail.summary, detail.stuck)
    body["timeline"] = [event_out(e) for e in detail.timeline]
    body["retries"] = [retry_out(r) for r in detail.retries]
    return body


@router.post(
    "/{artifact_id}/retries",
    status_code=202,
    response_model=RetryOut,
    responses={
        403: {"model": ErrorReply},
        404: {"model": ErrorReply},
        409: {
            "model": ErrorReply,
            "description": "`not_failed` (neither failed nor stuck), `retry_in_progress`, or"
            " `stage_after_failure` (the stage starts after the one the artifact failed or is stuck in)",
        },
        429: {"model": ErrorReply, "description": "more than 10 retries of this artifact in an hour"},
        503: {
            "model": ErrorReply,
            "description": "`no_retry_handler`: no webhook or in-process handler is configured; or the"
            " database is unreachable",
        },
    },
    summary="Retry a failed or stuck artifact from one stage or in full (staff)",
)
def post_retry(
    services: ServicesDep,
    principal: PrincipalDep,
    artifact_id: ArtifactPath,
    body: RetryIn,
    organization_id: OwnerQuery = None,
) -> dict[str, Any]:
    """Committed in one transaction; the pipeline is told after the commit, and the retry's outcome is
    followed from the artifact's next completion or failure. A stage retry may start at the stage the
    artifact failed in (or, stuck, is in) or an earlier one; ``full`` always may."""
    retry = services.retries.request(principal, artifact_id, body.stage, body.reason, organization_id)
    return retry_out(retry)


@router.get(
    "/{artifact_id}/retries",
    response_model=RetryList,
    responses={404: {"model": ErrorReply}, 409: {"model": ErrorReply}},
    summary="Retry history of one artifact, oldest first",
)
def list_retries(
    services: ServicesDep,
    principal: PrincipalDep,
    artifact_id: ArtifactPath,
    organization_id: OwnerQuery = None,
) -> dict[str, Any]:
    return {"items": [retry_out(r) for r in services.retries.list(principal, artifact_id, organization_id)]}
