"""``/v1/orgs``: the organization directory (staff only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.schemas import OrgIn, OrgList, OrgOut
from voicemon.domain.records import OrgRecord
from voicemon.domain.timeutil import format_time

router = APIRouter(prefix="/v1/orgs", tags=["orgs"])


def _out(r: OrgRecord) -> dict[str, Any]:
    return {"organization_id": r.organization_id, "name": r.name, "updated_at": format_time(r.updated_ms)}


@router.get("", response_model=OrgList, summary="The organization directory")
def list_orgs(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"items": [_out(r) for r in services.orgs.list(principal)]}


@router.put("/{organization_id}", response_model=OrgOut, summary="Name an organization")
def put_org(
    services: ServicesDep,
    principal: PrincipalDep,
    organization_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: OrgIn,
) -> dict[str, Any]:
    return _out(services.orgs.put(principal, organization_id, body.name))
