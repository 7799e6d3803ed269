"""The dashboard's routes: sign-in, the pages, and the actions (retry, acknowledge), on the service layer.

A page handler asks the same use cases as the API, as the session's principal. A refusal from a use case
(a scope, a role, a retry rule) is shown on the page as the API would say it, never as a server error.
Actions are POST forms with the session's CSRF token; each ends in a redirect back to the page, with the
outcome in the query string, so reloading the page never repeats the action.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from voicemon.domain.access import Principal, Role
from voicemon.domain.model import MEASURED_STAGES, EventType, Stage
from voicemon.domain.periods import Period
from voicemon.domain.records import EventFilter
from voicemon.domain.snapshot import render_fields, render_parts
from voicemon.domain.snapshot_fields import ORG_BREAKDOWN
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, floor_to, format_time
from voicemon.errors import AuthError, NotFoundError, ValidationError, VoicemonError
from voicemon.jobs import JobRunner
from voicemon.service import Services
from voicemon.service.alerts import alert_body
from voicemon.service.metrics import Range
from voicemon.web.format import FEW_SAMPLES, FILTERS, rate_class
from voicemon.web.session import COOKIE, LOGIN_COOKIE, Session, Sessions

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
# Only the app's own files: no inline script or style, no other origin, no framing (SPEC 16).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PAGE_SIZE = 50
FEED_SIZE = 15
RETRY_STAGES = ("full", *(s.value for s in MEASURED_STAGES))
ARTIFACT_STATUSES = (
    "active",
    "stuck",
    "failed",
    "completed",
    "received",
    "transcribing",
    "transcribed",
    "processing",
)


class LoginRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The caller of one page: the session's principal, and its CSRF token for the page's forms."""

    principal: Principal
    session: Session
    csrf: str

    @property
    def staff(self) -> bool:
        return self.principal.role is Role.STAFF

    @property
    def org(self) -> str | None:
        """The organization every figure is scoped to: the key's, or none (platform-wide) for others."""
        return self.principal.organization_id


def install_web(app: FastAPI, services: Services) -> None:
    """Mount the dashboard at ``/`` and its files at ``/static``."""
    settings = services.settings
    if settings.session_secret is not None:
        secret = settings.session_secret.get_secret_value().encode()
    else:
        secret = secrets.token_bytes(32)
        logger.warning(
            "no VOICEMON_SESSION_SECRET: dashboard sessions end when this process restarts, and work on "
            "this replica only",
            extra={"action": "session_secret_generated"},
        )
    app.state.sessions = Sessions(secret, int(settings.session_hours * 3600))
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(FILTERS)
    templates.env.globals["rate_class"] = rate_class
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _: LoginRequired) -> Response:
        target = "/login?" + urlencode({"next": request.url.path})
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)


router = APIRouter(include_in_schema=False)


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def viewer(request: Request) -> Viewer:
    """The signed-in caller, or :class:`LoginRequired`. Only viewer and staff keys open sessions."""
    sessions = _sessions(request)
    session = sessions.read(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired
    try:
        principal = _services(request).keys.principal_of(session.key_id)
    except AuthError:
        raise LoginRequired from None
    if principal.role not in (Role.VIEWER, Role.STAFF):
        raise LoginRequired
    return Viewer(principal, session, sessions.csrf(session))


ViewerDep = Annotated[Viewer, Depends(viewer)]


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def back(path: str, **outcome: str) -> RedirectResponse:
    """A redirect to ``path`` (one of ours) carrying the outcome of an action."""
    query = urlencode(outcome)
    joined = f"{path}{'&' if '?' in path else '?'}{query}" if query else path
    return RedirectResponse(joined, status_code=303, headers=SECURITY_HEADERS)


def _refused(exc: VoicemonError) -> str:
    field = f"{exc.field}: " if exc.field else ""
    return f"{field}{exc.message} ({exc.code})"


def _check_csrf(request: Request, v: Viewer, token: str | None) -> None:
    if not _sessions(request).csrf_ok(v.session, token):
        raise LoginRequired


def _safe_next(target: str | None) -> str:
    """Only a path of this site, never another origin (``//host`` or ``http://``)."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


# --- sign-in ---------------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str | None = None, error: str | None = None) -> HTMLResponse:
    token = _sessions(request).login_token()
    response = page(request, "login.html", {"token": token, "next": _safe_next(next), "error": error})
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)],
    token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    sessions = _sessions(request)
    target = _safe_next(next)
    if not sessions.login_ok(request.cookies.get(LOGIN_COOKIE), token):
        return back("/login", next=target, error="the sign-in form expired: try again")
    try:
        principal = _services(request).keys.authenticate(key.strip())
    except AuthError:
        return back("/login", next=target, error="that key is not valid")
    if principal.role not in (Role.VIEWER, Role.STAFF):
        return back(
            "/login",
            next=target,
            error=f"a {principal.role.value} key cannot sign in: use a viewer or staff key",
        )
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        sessions.issue(principal.key_id),
        max_age=sessions.max_age_s,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, v: ViewerDep, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    _check_csrf(request, v, csrf)
    response = RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE)
    return response


# --- overview --------------------------------------------------------------------------------------------


@router.get("/")
def overview(request: Request, v: ViewerDep) -> HTMLResponse:
    svc = _services(request)
    p, org = v.principal, v.org
    now_ms = svc.clock.now_ms()
    last_hour = svc.queries.realtime(p, org)
    day = svc.metrics.summary(p, svc.metrics.resolve_range(Period.HOURLY, None, None), org)
    today_range = Range(Period.HOURLY, floor_to(now_ms, DAY_MS), now_ms + 1)
    today = svc.metrics.summary(p, today_range, org)
    active, stuck = svc.queries.active_and_stuck(p, org)
    open_alerts = svc.alerts.list_alerts(p, state="open", organization_id=org, limit=500)
    by_severity: dict[str, int] = {}
    for alert, _ in open_alerts.items:
        by_severity[alert.severity.value] = by_severity.get(alert.severity.value, 0) + 1
    return page(
        request,
        "overview.html",
        {
            "v": v,
            "nav": "overview",
            "now_ms": now_ms,
            "last_hour": last_hour,
            "day": render_parts(day.parts),
            "day_plan": day.plan,
            "today": render_parts(today.parts),
            "today_plan": today.plan,
            "active": active,
            "stuck": stuck,
            "alerts_by_severity": [
                (s, by_severity[s]) for s in ("critical", "high", "medium", "low") if s in by_severity
            ],
            "alerts_more": open_alerts.next_cursor is not None,
        },
    )


@router.get("/partials/activity")
def activity(request: Request, v: ViewerDep) -> HTMLResponse:
    """The newest events, for the overview's feed (htmx refreshes it every 5 s)."""
    svc = _services(request)
    events = svc.queries.list_events(v.principal, EventFilter(organization_id=v.org), None, FEED_SIZE)
    return page(request, "_activity.html", {"events": events.items, "now_ms": svc.clock.now_ms()})


# --- artifacts -------------------------------------------------------------------------------------------


def _artifact_filters(status: str | None, org: str | None, stage: str | None) -> dict[str, str]:
    return {k: val for k, val in (("status", status), ("org", org), ("failed_stage", stage)) if val}


@router.get("/artifacts")
def artifacts(
    request: Request,
    v: ViewerDep,
    status: Annotated[str | None, Query(max_length=32)] = None,
    org: Annotated[str | None, Query(max_length=128)] = None,
    failed_stage: Annotated[str | None, Query(max_length=32)] = None,
    find: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    msg: str | None = None,
    error: str | None = None,
) -> Response:
    svc = _services(request)
    if find:
        return back(f"/artifacts/{quote(find.strip(), safe='')}", **({"org": org} if org else {}))
    status = status if status in ARTIFACT_STATUSES else None
    stage = failed_stage if failed_stage in {s.value for s in MEASURED_STAGES} else None
    problem = error
    items: list[Any] = []
    next_cursor = None
    try:
        listed = svc.queries.list_artifacts(v.principal, status, org or v.org, cursor, PAGE_SIZE, stage)
        items, next_cursor = listed.items, listed.next_cursor
    except VoicemonError as exc:
        problem = _refused(exc)
    context = {
        "v": v,
        "nav": "artifacts",
        "items": items,
        "next_cursor": next_cursor,
        "status": status,
        "org": org,
        "statuses": ARTIFACT_STATUSES,
        "stages": RETRY_STAGES,
        "failed_stage": stage,
        "measured": [s.value for s in MEASURED_STAGES],
        "filters": _artifact_filters(status, org, stage),
        "msg": msg,
        "error": problem,
    }
    if cursor and request.headers.get("HX-Request"):
        return page(request, "_artifact_rows.html", {**context, "partial": True})
    return page(request, "artifacts.html", context)


@router.get("/artifacts/{artifact_id}")
def artifact_detail(
    request: Request,
    v: ViewerDep,
    artifact_id: str,
    org: Annotated[str | None, Query(max_length=128)] = None,
    msg: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    svc = _services(request)
    try:
        detail = svc.queries.artifact(v.principal, artifact_id, org)
    except VoicemonError as exc:
        return page(
            request,
            "message.html",
            {"v": v, "nav": "artifacts", "title": f"Artifact {artifact_id}", "error": _refused(exc)},
            status_code=exc.http_status,
        )
    timeline = [
        (
            e,
            orjson.dumps(dict(e.event.metadata), option=orjson.OPT_INDENT_2).decode()
            if e.event.metadata
            else None,
        )
        for e in detail.timeline
    ]
    return page(
        request,
        "artifact.html",
        {
            "v": v,
            "nav": "artifacts",
            "a": detail.summary,
            "stuck": detail.stuck,
            "timeline": timeline,
            "retries": detail.retries,
            "stages": RETRY_STAGES,
            "msg": msg,
            "error": error,
        },
    )


@router.post("/artifacts/{artifact_id}/retry")
def retry(
    request: Request,
    v: ViewerDep,
    artifact_id: str,
    stage: Annotated[str, Form(max_length=32)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    org: Annotated[str, Form(max_length=128)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    back_to: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    _check_csrf(request, v, csrf)
    target = _safe_next(back_to or f"/artifacts/{quote(artifact_id, safe='')}")
    extra = {"org": org} if org and "?" not in target and target.startswith("/artifacts/") else {}
    try:
        made = _services(request).retries.request(v.principal, artifact_id, stage, reason, org or None)
    except VoicemonError as exc:
        return back(target, error=f"retry of {artifact_id} refused: {_refused(exc)}", **extra)
    return back(
        target,
        msg=f"retry {made.retry_id[:8]} of {artifact_id} ({stage}) accepted: {made.status.value}",
        **extra,
    )


# --- alerts ----------------------------------------------------------------------------------------------


@router.get("/alerts")
def alerts(request: Request, v: ViewerDep, msg: str | None = None, error: str | None = None) -> HTMLResponse:
    svc = _services(request)
    open_page = svc.alerts.list_alerts(v.principal, state="open", organization_id=v.org, limit=200)
    history = svc.alerts.list_alerts(v.principal, state="resolved", organization_id=v.org, limit=50)
    rules = svc.alerts.rules(v.principal)
    return page(
        request,
        "alerts.html",
        {
            "v": v,
            "nav": "alerts",
            "open": [alert_body(a, name) for a, name in open_page.items],
            "history": [alert_body(a, name) for a, name in history.items],
            "rules": [
                {**r.config.to_dict(), "per_stage": r.per_stage, "updated_by": r.updated_by} for r in rules
            ],
            "msg": msg,
            "error": error,
        },
    )


@router.post("/alerts/{alert_id}/ack")
def acknowledge(
    request: Request,
    v: ViewerDep,
    alert_id: str,
    note: Annotated[str, Form(max_length=2000)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    _check_csrf(request, v, csrf)
    try:
        detail = _services(request).alerts.acknowledge(v.principal, alert_id, note or None)
    except VoicemonError as exc:
        return back("/alerts", error=f"not acknowledged: {_refused(exc)}")
    return back(
        "/alerts", msg=f"acknowledged {detail.alert.rule} ({alert_id[:8]}) as {detail.alert.acknowledged_by}"
    )


# --- range choice shared by the pipeline, metrics and organizations pages -----------------------------

# (label, length, period of the rows read): hourly rows up to 7 days, daily beyond (SPEC 16).
RANGES = {
    "1h": ("1 hour", HOUR_MS, Period.HOURLY),
    "6h": ("6 hours", 6 * HOUR_MS, Period.HOURLY),
    "24h": ("24 hours", DAY_MS, Period.HOURLY),
    "7d": ("7 days", 7 * DAY_MS, Period.HOURLY),
    "30d": ("30 days", 30 * DAY_MS, Period.DAILY),
    "90d": ("90 days", 90 * DAY_MS, Period.DAILY),
}


def _range(svc: Services, choice: str | None) -> tuple[str, Range]:
    """The chosen range ending now: the periods that start in the last N hours or days, the one in
    progress included (an hour range of 1 h is the hour in progress and the one before it ends)."""
    key = choice if choice in RANGES else "24h"
    _, length, period = RANGES[key]
    now_ms = svc.clock.now_ms()
    return key, Range(period, now_ms - length, now_ms + 1)


# --- pipeline --------------------------------------------------------------------------------------------


@router.get("/pipeline")
def pipeline(
    request: Request, v: ViewerDep, range: Annotated[str | None, Query(max_length=8)] = None
) -> HTMLResponse:
    svc = _services(request)
    key, r = _range(svc, range)
    merged = svc.metrics.summary(v.principal, r, v.org)
    return page(
        request,
        "pipeline.html",
        {
            "v": v,
            "nav": "pipeline",
            "ranges": RANGES,
            "chosen": key,
            "m": render_parts(merged.parts),
            "plan": merged.plan,
        },
    )


# --- organizations ---------------------------------------------------------------------------------------

ORG_SORTS = {
    "received": lambda i: (-i["artifacts_received"], i["organization_id"]),
    "failed": lambda i: (-i["artifacts_failed"], i["organization_id"]),
    "failure_rate": lambda i: (-i["overall_failure_rate"], i["organization_id"]),
    "cost": lambda i: (-i["total_ai_cost_usd"], i["organization_id"]),
    "name": lambda i: (i["organization_name"].lower(), i["organization_id"]),
}


@router.get("/orgs")
def organizations(
    request: Request,
    v: ViewerDep,
    range: Annotated[str | None, Query(max_length=8)] = None,
    sort: Annotated[str | None, Query(max_length=16)] = None,
    msg: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    svc = _services(request)
    key, r = _range(svc, range)
    order = sort if sort in ORG_SORTS else "received"
    try:
        breakdown = svc.metrics.by_organization(v.principal, r)
    except VoicemonError as exc:
        context = {"v": v, "nav": "orgs", "title": "Organizations", "error": _refused(exc)}
        return page(request, "message.html", context, status_code=exc.http_status)
    items = [
        {
            "organization_id": i.organization_id,
            "organization_name": i.organization_name,
            **render_fields(i.parts, ORG_BREAKDOWN),
        }
        for i in breakdown.items
    ]
    items.sort(key=ORG_SORTS[order])
    return page(
        request,
        "orgs.html",
        {
            "v": v,
            "nav": "orgs",
            "ranges": RANGES,
            "chosen": key,
            "sort": order,
            "sorts": list(ORG_SORTS),
            "items": items,
            "plan": breakdown.plan,
            "msg": msg,
            "error": error,
        },
    )


@router.post("/orgs/{organization_id}/name")
def name_organization(
    request: Request,
    v: ViewerDep,
    organization_id: str,
    name: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    _check_csrf(request, v, csrf)
    try:
        record = _services(request).orgs.put(v.principal, organization_id, name)
    except VoicemonError as exc:
        return back("/orgs", error=f"not renamed: {_refused(exc)}")
    return back("/orgs", msg=f"{record.organization_id} is now named {record.name}")


# --- events ----------------------------------------------------------------------------------------------


@router.get("/events")
def events(
    request: Request,
    v: ViewerDep,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    stage: Annotated[str | None, Query(max_length=32)] = None,
    org: Annotated[str | None, Query(max_length=128)] = None,
    artifact: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> HTMLResponse:
    svc = _services(request)
    chosen = {"event_type": event_type, "stage": stage, "org": org, "artifact": artifact}
    filters = {k: val for k, val in chosen.items() if val}
    problem = None
    rows: list[Any] = []
    next_cursor = None
    try:
        f = EventFilter(event_type, stage, org or v.org, artifact)
        listed = svc.queries.list_events(v.principal, f, cursor, PAGE_SIZE)
        rows, next_cursor = listed.items, listed.next_cursor
    except VoicemonError as exc:
        problem = _refused(exc)
    items = [(e, orjson.dumps(event_json(e), option=orjson.OPT_INDENT_2).decode()) for e in rows]
    context = {
        "v": v,
        "nav": "events",
        "items": items,
        "next_cursor": next_cursor,
        "filters": filters,
        "chosen": chosen,
        "event_types": [t.value for t in EventType],
        "stages": [s.value for s in Stage],
        "error": problem,
    }
    if cursor and request.headers.get("HX-Request"):
        return page(request, "_event_rows.html", {**context, "partial": True})
    return page(request, "events.html", context)


def event_json(stored: Any) -> dict[str, Any]:
    """An event as the API lists it (``GET /v1/events``), for "show JSON"."""
    e = stored.event
    body = {
        "event_id": e.event_id,
        "event_type": e.event_type.value,
        "artifact_id": e.artifact_id,
        "organization_id": e.organization_id,
        "pipeline_stage": e.pipeline_stage.value if e.pipeline_stage else None,
        "timestamp": format_time(e.timestamp_ms),
        "received_at": format_time(e.received_ms),
        "duration_ms": e.duration_ms,
        "error_code": e.error_code,
        "error_message": e.error_message,
        "metadata": dict(e.metadata) if e.metadata is not None else None,
    }
    return {k: val for k, val in body.items() if val is not None}


# --- jobs ------------------------------------------------------------------------------------------------


def _runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


@router.get("/jobs")
def jobs(
    request: Request,
    v: ViewerDep,
    job: Annotated[str | None, Query(max_length=64)] = None,
    msg: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    runner = _runner(request)
    try:
        overview_items = runner.overview(v.principal)
        runs = runner.runs(v.principal, job if job in runner.jobs else None, 30)
    except VoicemonError as exc:
        context = {"v": v, "nav": "jobs", "title": "Jobs", "error": _refused(exc)}
        return page(request, "message.html", context, status_code=exc.http_status)
    return page(
        request,
        "jobs.html",
        {
            "v": v,
            "nav": "jobs",
            "jobs": overview_items,
            "runs": runs,
            "job": job,
            "msg": msg,
            "error": error,
        },
    )


@router.post("/jobs/{name}/run")
def run_job(
    request: Request, v: ViewerDep, name: str, csrf: Annotated[str, Form(max_length=100)] = ""
) -> Response:
    _check_csrf(request, v, csrf)
    try:
        run = _runner(request).run_now(v.principal, name, None)
    except VoicemonError as exc:
        return back("/jobs", error=f"{name} not run: {_refused(exc)}")
    outcome = f"{name}: {run.status}" + (f" ({run.error})" if run.error else "")
    return back("/jobs", job=name, **({"error": outcome} if run.status == "failed" else {"msg": outcome}))


# --- metrics (charts) ------------------------------------------------------------------------------------
# At /charts: /metrics is the Prometheus scrape endpoint's path (SPEC 17).

_COLORS = {"p50": "#1a6b34", "p95": "#0b57d0", "p99": "#b3261e"}


def chart_data(rows: list[Any]) -> dict[str, Any]:
    """The series of the metrics page, one point per period: what uPlot draws (time in seconds). A
    percentile from fewer than :data:`FEW_SAMPLES` samples is left out (a gap), not drawn as a
    confident point."""
    rendered = [render_parts(row.parts) for row in rows]

    def latency(pick: Any) -> list[dict[str, Any]]:
        return [
            {
                "label": name,
                "color": color,
                "values": [
                    (lat[name] if lat[name] is not None and lat["count"] >= FEW_SAMPLES else None)
                    for lat in (pick(r) for r in rendered)
                ],
            }
            for name, color in _COLORS.items()
        ]

    charts: dict[str, Any] = {
        "throughput": {
            "title": "Artifacts per period",
            "unit": "",
            "series": [
                {
                    "label": "received",
                    "color": "#4a5360",
                    "values": [r["artifacts_received"] for r in rendered],
                },
                {
                    "label": "completed",
                    "color": "#1a6b34",
                    "values": [r["artifacts_completed"] for r in rendered],
                },
                {"label": "failed", "color": "#b3261e", "values": [r["artifacts_failed"] for r in rendered]},
            ],
        },
        "failure_rate": {
            "title": "Failure rate",
            "unit": "%",
            "series": [
                {
                    "label": "failed / ended",
                    "color": "#b3261e",
                    "values": [round(r["overall_failure_rate"] * 100, 2) for r in rendered],
                }
            ],
        },
        "cost": {
            "title": "AI cost",
            "unit": "$",
            "series": [
                {"label": "cost", "color": "#8a5200", "values": [r["total_ai_cost_usd"] for r in rendered]}
            ],
        },
        "end_to_end": {
            "title": "End-to-end latency",
            "unit": "ms",
            "series": latency(lambda r: r["end_to_end_latency_ms"]),
        },
    }
    for i, stage in enumerate(MEASURED_STAGES):
        charts[stage.value] = {
            "title": f"{stage.value.replace('_', ' ').capitalize()} latency",
            "unit": "ms",
            "series": latency(lambda r, i=i: r["stages"][i]["latency_ms"]),
        }
    return {"t": [row.period_start_ms // 1000 for row in rows], "charts": charts}


@router.get("/charts")
def charts(
    request: Request, v: ViewerDep, range: Annotated[str | None, Query(max_length=8)] = None
) -> HTMLResponse:
    svc = _services(request)
    key, r = _range(svc, range)
    history = svc.metrics.history(v.principal, r, v.org)
    data = chart_data(history.rows)
    return page(
        request,
        "charts.html",
        {
            "v": v,
            "nav": "metrics",
            "ranges": RANGES,
            "chosen": key,
            "plan": history.plan,
            "period": r.period.value,
            "points": len(history.rows),
            "live": len(history.live),
            "charts": [(name, c["title"]) for name, c in data["charts"].items()],
            # Inside <script type="application/json">: "</" could end the element early.
            "series": orjson.dumps(data).decode().replace("</", "<\\/"),
        },
    )


@router.post("/alerts/rules/{rule}")
async def change_rule(request: Request, v: ViewerDep, rule: str) -> Response:
    """Staff change a rule from its row: enabled, minimum volume, the evaluations to fire and to
    resolve, and each level's threshold (the levels' severities stay). Checked whole by the use case."""
    form = await request.form()
    _check_csrf(request, v, str(form.get("csrf", "")))
    svc = _services(request)
    try:
        views = await run_in_threadpool(svc.alerts.rules, v.principal)
        current = {r.config.rule.value: r.config for r in views}.get(rule)
        if current is None:
            raise NotFoundError(f"no alert rule {rule!r}", code="rule_not_found")
        changes: dict[str, Any] = {
            "enabled": form.get("enabled") == "yes",
            "min_volume": _number(form, "min_volume", float),
            "for_evaluations": _number(form, "for_evaluations", int),
            "clear_evaluations": _number(form, "clear_evaluations", int),
            "levels": [
                {"severity": level.severity.value, "threshold": _number(form, f"threshold_{i}", float)}
                for i, level in enumerate(current.levels)
            ],
        }
        await run_in_threadpool(svc.alerts.update_rule, v.principal, rule, changes)
    except VoicemonError as exc:
        return back("/alerts", error=f"{rule} not changed: {_refused(exc)}")
    return back("/alerts", msg=f"{rule} changed; it applies from the next evaluation")


def _number(form: Any, name: str, kind: type[int] | type[float]) -> int | float:
    raw = str(form.get(name, "")).strip()
    try:
        return kind(raw)
    except ValueError:
        raise ValidationError(f"must be a number, not {raw!r}", code="invalid_number", field=name) from None
