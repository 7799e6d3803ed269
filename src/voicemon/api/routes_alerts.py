"""``/v1/alerts`` and ``/v1/alert-rules`` (SPEC 14): what fired, its history, acknowledgement, the rules."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from voicemon.api.deps import PrincipalDep, ServicesDep
from voicemon.api.params import CursorQuery, LimitQuery
from voicemon.api.schemas import (
    AckIn,
    AlertDetailOut,
    AlertPageOut,
    ErrorReply,
    RuleChangeIn,
    RuleList,
    RuleOut,
    Severity,
)
from voicemon.domain.timeutil import format_time
from voicemon.service.alerts import AlertDetail, RuleView, alert_body

router = APIRouter(tags=["alerts"])

AlertPath = Annotated[str, Path(min_length=1, max_length=64)]
RulePath = Annotated[str, Path(min_length=1, max_length=64)]
StateFilter = Literal["open", "firing", "acknowledged", "resolved"]


def _time(ms: int | None) -> str | None:
    return None if ms is None else format_time(ms)


def rule_out(view: RuleView) -> dict[str, Any]:
    body = view.config.to_dict()
    return {
        **body,
        "per_stage": view.per_stage,
        "updated_at": _time(view.updated_ms),
        "updated_by": view.updated_by,
    }


@router.get(
    "/v1/alerts",
    response_model=AlertPageOut,
    response_model_exclude_unset=True,
    responses={400: {"model": ErrorReply}},
    summary="Alerts, newest first",
)
def list_alerts(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    state: Annotated[StateFilter | None, Query(description="`open` is firing or acknowledged")] = None,
    severity: Severity | None = None,
    rule: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    organization_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> dict[str, Any]:
    """An organization's key sees only its organization's alerts."""
    page = services.alerts.list_alerts(
        principal,
        state=state,
        severity=severity,
        rule=rule,
        organization_id=organization_id,
        cursor=cursor,
        limit=limit,
    )
    return {"items": [alert_body(a, name) for a, name in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/v1/alerts/{alert_id}",
    response_model=AlertDetailOut,
    response_model_exclude_unset=True,
    responses={404: {"model": ErrorReply}},
    summary="One alert with its transitions and notification deliveries",
)
def get_alert(services: ServicesDep, principal: PrincipalDep, alert_id: AlertPath) -> dict[str, Any]:
    return _detail_out(services.alerts.get(principal, alert_id))


def _detail_out(detail: AlertDetail) -> dict[str, Any]:
    body = alert_body(detail.alert, detail.name)
    body["transitions"] = [
        {
            "at": format_time(t["at_ms"]),
            "kind": t["kind"],
            "severity": t["severity"],
            "value": t["value"],
            "threshold": t["threshold"],
            "actor": t["actor"],
            "note": t["note"],
        }
        for t in detail.transitions
    ]
    body["deliveries"] = [
        {
            "channel": d["channel"].removeprefix("alert_"),
            "notification": d["notification"],
            "status": d["status"],
            "attempts": d["attempts"],
            "at": format_time(d["at_ms"]),
            "error": d["error"],
        }
        for d in detail.deliveries
    ]
    return body


@router.post(
    "/v1/alerts/{alert_id}/ack",
    response_model=AlertDetailOut,
    response_model_exclude_unset=True,
    responses={
        403: {"model": ErrorReply},
        404: {"model": ErrorReply},
        409: {
            "model": ErrorReply,
            "description": "`alert_acknowledged` or `alert_resolved`: only a firing alert is acknowledged",
        },
    },
    summary="Acknowledge a firing alert (staff): it stays open, is not re-notified, and resolves by itself",
)
def acknowledge(
    services: ServicesDep, principal: PrincipalDep, alert_id: AlertPath, body: AckIn | None = None
) -> dict[str, Any]:
    detail = services.alerts.acknowledge(principal, alert_id, body.note if body else None)
    return _detail_out(detail)


@router.get("/v1/alert-rules", response_model=RuleList, summary="The alert rules with their settings")
def list_rules(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"items": [rule_out(v) for v in services.alerts.rules(principal)]}


@router.put(
    "/v1/alert-rules/{rule}",
    response_model=RuleOut,
    responses={403: {"model": ErrorReply}, 404: {"model": ErrorReply}},
    summary="Change a rule (staff): checked whole, recorded with who and when, used from the next evaluation",
)
def update_rule(
    services: ServicesDep, principal: PrincipalDep, rule: RulePath, body: RuleChangeIn
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    return rule_out(services.alerts.update_rule(principal, rule, changes))
