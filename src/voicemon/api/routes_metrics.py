"""``/v1/metrics``: live counters (SPEC 5) and snapshot history and roll-ups (SPEC 6, 7)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.render import coverage_out, realtime_out, snapshot_out
from voicemon.api.schemas import (
    ErrorReply,
    OrgMetricsList,
    RealtimeOut,
    SnapshotList,
    StagesOut,
    SummaryOut,
)
from voicemon.domain.access import Principal
from voicemon.domain.periods import Period
from voicemon.domain.records import SnapshotRow
from voicemon.domain.snapshot import render_fields
from voicemon.domain.snapshot_fields import ORG_BREAKDOWN, STAGE_BREAKDOWN
from voicemon.domain.timeutil import parse_time_text
from voicemon.service import Services
from voicemon.service.metrics import Range

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
    body: dict[str, Any] = realtime_out(services.queries.realtime(principal, organization_id))
    # Returned as is: the platform-wide reply omits organization_id instead of carrying null.
    return JSONResponse(body)


PeriodQuery = Annotated[Period, Query(description="hourly or daily")]
OrgQuery = Annotated[str | None, Query(min_length=1, max_length=128)]
StartQuery = Annotated[str | None, Query(description="first period start included; RFC 3339 or epoch ms")]
EndQuery = Annotated[str | None, Query(description="periods starting before this; default now")]


def range_params(
    services: ServicesDep,
    period: PeriodQuery = Period.HOURLY,
    start: StartQuery = None,
    end: EndQuery = None,
) -> Range:
    """The ``period``, ``start`` and ``end`` query parameters every snapshot query shares."""
    return services.metrics.resolve_range(
        period, parse_time_text("start", start), parse_time_text("end", end)
    )


RangeDep = Annotated[Range, Depends(range_params)]


def _row_out(row: SnapshotRow) -> dict[str, Any]:
    period = Period(row.period_type)
    return snapshot_out(
        row.period_type,
        row.period_start_ms,
        row.period_start_ms + period.length_ms,
        row.scope or None,
        row.computed_ms,
        row.parts,
    )


@router.get(
    "/history",
    response_model=SnapshotList,
    response_model_exclude_unset=True,
    summary="Snapshot rows of one scope, oldest first",
)
def history(
    services: ServicesDep,
    principal: PrincipalDep,
    r: RangeDep,
    organization_id: OrgQuery = None,
) -> JSONResponse:
    history = services.metrics.history(principal, r, organization_id)
    items = [_row_out(row) for row in history.rows]
    for item, row in zip(items, history.rows, strict=True):
        if row.period_start_ms in history.live:
            item["live"] = True
    return JSONResponse({"items": items, "coverage": coverage_out(history.plan)})


def _merged(
    services: Services, principal: Principal, r: Range, organization_id: str | None
) -> dict[str, Any]:
    merged = services.metrics.summary(principal, r, organization_id)
    plan = merged.plan
    computed = merged.computed_ms if merged.computed_ms is not None else services.clock.now_ms()
    body = snapshot_out(
        r.period.value, plan.period_start_ms, plan.period_end_ms, organization_id, computed, merged.parts
    )
    body["coverage"] = coverage_out(plan)
    return body


@router.get("/summary", response_model=SummaryOut, summary="The range merged into one snapshot")
def summary(
    services: ServicesDep,
    principal: PrincipalDep,
    r: RangeDep,
    organization_id: OrgQuery = None,
) -> JSONResponse:
    return JSONResponse(_merged(services, principal, r, organization_id))


@router.get(
    "/stages", response_model=StagesOut, summary="Per-stage figures and end-to-end latency of a range"
)
def stages(
    services: ServicesDep,
    principal: PrincipalDep,
    r: RangeDep,
    organization_id: OrgQuery = None,
) -> dict[str, Any]:
    body = _merged(services, principal, r, organization_id)
    return {name: body[name] for name in (*STAGE_BREAKDOWN, "coverage")}


@router.get(
    "/current",
    response_model=SummaryOut,
    summary="The hour in progress, computed from raw events now (not stored; its period ends now)",
)
def current(services: ServicesDep, principal: PrincipalDep, organization_id: OrgQuery = None) -> JSONResponse:
    merged = services.metrics.current_hour(principal, organization_id)
    r = merged.range
    body = snapshot_out(
        r.period.value, r.start_ms, merged.plan.now_ms, organization_id, merged.plan.now_ms, merged.parts
    )
    body["coverage"] = coverage_out(merged.plan)
    return JSONResponse(body)


@router.get("/orgs", response_model=OrgMetricsList, summary="One merged item per organization (staff)")
def orgs(services: ServicesDep, principal: PrincipalDep, r: RangeDep) -> dict[str, Any]:
    breakdown = services.metrics.by_organization(principal, r)
    return {
        "coverage": coverage_out(breakdown.plan),
        "items": [
            {
                "organization_id": item.organization_id,
                "organization_name": item.organization_name,
                **render_fields(item.parts, ORG_BREAKDOWN),
            }
            for item in breakdown.items
        ],
    }
