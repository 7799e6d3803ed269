"""The grouped reads behind ``/metrics``' scrape-time families (SPEC 17): what the database says now,
each one statement whatever the number of organizations."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, select

from voicemon.domain.alerts import AlertState
from voicemon.domain.model import ACTIVE_STATUSES
from voicemon.storage.tables import alerts, artifacts, job_runs, period_versions

SUCCEEDED = "succeeded"


@dataclass(frozen=True, slots=True)
class State:
    """``active``: active artifacts by status; ``stuck``: how many of them are stuck; ``open_alerts`` by
    severity; ``last_success_ms`` by job; ``hourly_through_ms``: the end of the newest aggregated hour."""

    active: dict[str, int]
    stuck: int
    open_alerts: dict[str, int]
    last_success_ms: dict[str, int]
    hourly_through_ms: int | None
    # Per organization (only when asked): (active, stuck) of the busiest by active artifacts, and open
    # alerts of those with the most.
    by_organization: dict[str, tuple[int, int]] | None = None
    alerts_by_organization: dict[str, int] | None = None


def read_state(conn: Connection, stuck_before_ms: int, hour_ms: int, organizations: int = 0) -> State:
    """The state of now; with ``organizations`` > 0, also per organization, capped at that many."""
    c = artifacts.c
    stuck = func.sum(case((c.last_event_at_ms < stuck_before_ms, 1), else_=0))
    by_status = select(c.status, func.count(), stuck).where(c.status.in_([s.value for s in ACTIVE_STATUSES]))
    active: dict[str, int] = {}
    stuck_total = 0
    for status, n, s in conn.execute(by_status.group_by(c.status)):
        active[status] = int(n)
        stuck_total += int(s or 0)
    a = alerts.c
    open_states = [AlertState.FIRING.value, AlertState.ACKNOWLEDGED.value]
    severities = select(a.severity, func.count()).where(a.state.in_(open_states)).group_by(a.severity)
    open_alerts = {severity: int(n) for severity, n in conn.execute(severities)}
    r = job_runs.c
    successes = select(r.name, func.max(r.finished_ms)).where(r.status == SUCCEEDED).group_by(r.name)
    last_success = {name: int(at) for name, at in conn.execute(successes) if at is not None}
    v = period_versions.c
    newest = conn.scalar(
        select(func.max(v.period_start_ms)).where(
            v.period_type == "hourly", v.aggregated_version.is_not(None)
        )
    )
    through = None if newest is None else int(newest) + hour_ms
    if organizations <= 0:
        return State(active, stuck_total, open_alerts, last_success, through)
    n = func.count()
    per_org = (
        select(c.organization_id, n, stuck)
        .where(c.status.in_([s.value for s in ACTIVE_STATUSES]), c.organization_id.is_not(None))
        .group_by(c.organization_id)
        .order_by(n.desc(), c.organization_id)
        .limit(organizations)
    )
    by_org = {org: (int(count), int(k or 0)) for org, count, k in conn.execute(per_org)}
    count = func.count()
    alerts_per_org = (
        select(a.scope, count)
        .where(a.state.in_(open_states), a.scope != "")
        .group_by(a.scope)
        .order_by(count.desc(), a.scope)
        .limit(organizations)
    )
    alerts_by_org = {org: int(k) for org, k in conn.execute(alerts_per_org)}
    return State(active, stuck_total, open_alerts, last_success, through, by_org, alerts_by_org)
