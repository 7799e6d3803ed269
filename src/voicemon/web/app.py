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

from voicemon.domain.access import Principal, Role
from voicemon.domain.model import MEASURED_STAGES
from voicemon.domain.periods import Period
from voicemon.domain.records import EventFilter
from voicemon.domain.snapshot import render_parts
from voicemon.domain.timeutil import DAY_MS, floor_to
from voicemon.errors import AuthError, VoicemonError
from voicemon.service import Services
from voicemon.service.alerts import alert_body
from voicemon.service.metrics import Range
from voicemon.web.format import FILTERS, rate_class
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
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303, headers=SECURITY_HEADERS)


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


def _artifact_filters(status: str | None, org: str | None) -> dict[str, str]:
    return {k: val for k, val in (("status", status), ("org", org)) if val}


@router.get("/artifacts")
def artifacts(
    request: Request,
    v: ViewerDep,
    status: Annotated[str | None, Query(max_length=32)] = None,
    org: Annotated[str | None, Query(max_length=128)] = None,
    find: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    msg: str | None = None,
    error: str | None = None,
) -> Response:
    svc = _services(request)
    if find:
        return back(f"/artifacts/{quote(find.strip(), safe='')}", **({"org": org} if org else {}))
    status = status if status in ARTIFACT_STATUSES else None
    problem = error
    items: list[Any] = []
    next_cursor = None
    try:
        listed = svc.queries.list_artifacts(v.principal, status, org or v.org, cursor, PAGE_SIZE)
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
        "filters": _artifact_filters(status, org),
        "msg": msg,
        "error": problem,
    }
    if cursor and request.headers.get("HX-Request"):
        return page(request, "_artifact_rows.html", context)
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
