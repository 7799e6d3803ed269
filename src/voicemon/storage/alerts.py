"""Alerts, their transitions, deliveries and streaks, rule configurations (SPEC 14); and the grouped reads
one evaluation needs besides snapshot parts: artifact counts, circuit-breaker and budget events, and
undeliverable retries, each one statement for every scope at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Connection, and_, bindparam, case, func, or_, select, tuple_, update

from voicemon.domain.alerts import AlertState, Severity, Streak
from voicemon.domain.model import ACTIVE_STATUSES, EventType
from voicemon.domain.retries import RetryStatus
from voicemon.storage.dialect import upsert_replace
from voicemon.storage.tables import (
    alert_deliveries,
    alert_rule_changes,
    alert_rules,
    alert_streaks,
    alert_transitions,
    alerts,
    artifacts,
    evaluators,
    events,
    retries,
    snapshots,
)

Fingerprint = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class AlertRecord:
    alert_id: str
    rule: str
    scope: str
    stage: str
    severity: Severity
    state: AlertState
    value: float
    threshold: float
    message: str
    started_ms: int
    last_evaluated_ms: int
    last_evaluation: str
    acknowledged_ms: int | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_ms: int | None

    @property
    def fingerprint(self) -> Fingerprint:
        return (self.rule, self.scope, self.stage)


def _record(row: Any) -> AlertRecord:
    m = row._mapping
    return AlertRecord(
        alert_id=m["alert_id"],
        rule=m["rule"],
        scope=m["scope"],
        stage=m["stage"],
        severity=Severity(m["severity"]),
        state=AlertState(m["state"]),
        value=float(m["value"]),
        threshold=float(m["threshold"]),
        message=m["message"],
        started_ms=int(m["started_ms"]),
        last_evaluated_ms=int(m["last_evaluated_ms"]),
        last_evaluation=m["last_evaluation"],
        acknowledged_ms=m["acknowledged_ms"],
        acknowledged_by=m["acknowledged_by"],
        ack_note=m["ack_note"],
        resolved_ms=m["resolved_ms"],
    )


_OPEN = [AlertState.FIRING.value, AlertState.ACKNOWLEDGED.value]


def take_evaluator(conn: Connection, name: str, now_ms: int) -> None:
    """Write the evaluator's row first in an evaluation's transaction: its row lock makes two evaluations
    take turns (PostgreSQL; SQLite has one writer), each deciding from what the other committed."""
    conn.execute(
        upsert_replace(conn, evaluators, ["name"], ["evaluated_ms"]), [{"name": name, "evaluated_ms": now_ms}]
    )


def open_alerts(conn: Connection) -> list[AlertRecord]:
    return [_record(r) for r in conn.execute(select(alerts).where(alerts.c.state.in_(_OPEN)))]


def streaks(conn: Connection) -> dict[Fingerprint, Streak]:
    s = alert_streaks.c
    rows = conn.execute(select(s.rule, s.scope, s.stage, s.breaches, s.clears))
    return {(r, sc, st): Streak(int(b), int(c)) for r, sc, st, b, c in rows}


def save_streaks(conn: Connection, keep: dict[Fingerprint, Streak], drop: Iterable[Fingerprint]) -> None:
    """Replace the streaks of ``keep`` and delete those of ``drop``, in two statements."""
    s = alert_streaks.c
    gone = list(drop)
    if gone:
        conn.execute(alert_streaks.delete().where(tuple_(s.rule, s.scope, s.stage).in_(gone)))
    if keep:
        conn.execute(
            upsert_replace(conn, alert_streaks, ["rule", "scope", "stage"], ["breaches", "clears"]),
            [
                {"rule": r, "scope": sc, "stage": st, "breaches": k.breaches, "clears": k.clears}
                for (r, sc, st), k in sorted(keep.items())
            ],
        )


def insert_alerts(conn: Connection, rows: Sequence[AlertRecord]) -> None:
    if rows:
        conn.execute(alerts.insert(), [_values(a) for a in rows])


def _values(a: AlertRecord) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id,
        "rule": a.rule,
        "scope": a.scope,
        "stage": a.stage,
        "severity": a.severity.value,
        "state": a.state.value,
        "value": a.value,
        "threshold": a.threshold,
        "message": a.message,
        "started_ms": a.started_ms,
        "last_evaluated_ms": a.last_evaluated_ms,
        "last_evaluation": a.last_evaluation,
        "acknowledged_ms": a.acknowledged_ms,
        "acknowledged_by": a.acknowledged_by,
        "ack_note": a.ack_note,
        "resolved_ms": a.resolved_ms,
    }


_UPDATABLE = ("severity", "state", "value", "threshold", "message", "last_evaluated_ms", "last_evaluation")


def update_alerts(conn: Connection, rows: Sequence[AlertRecord]) -> None:
    """Write the evaluation fields (and ``resolved_ms``) of open alerts, in one executemany. An alert
    acknowledged meanwhile keeps its acknowledgement: its state is only ever moved to ``resolved`` here."""
    if not rows:
        return
    a = alerts.c
    statement = (
        update(alerts)
        .where(a.alert_id == bindparam("b_id"))
        .values(
            severity=bindparam("b_severity"),
            value=bindparam("b_value"),
            threshold=bindparam("b_threshold"),
            message=bindparam("b_message"),
            last_evaluated_ms=bindparam("b_last_evaluated_ms"),
            last_evaluation=bindparam("b_last_evaluation"),
            resolved_ms=bindparam("b_resolved_ms"),
            state=case(
                (bindparam("b_resolved_ms", type_=BigInteger).is_not(None), AlertState.RESOLVED.value),
                else_=a.state,
            ),
        )
    )
    conn.execute(
        statement,
        [
            {
                "b_id": r.alert_id,
                "b_severity": r.severity.value,
                "b_value": r.value,
                "b_threshold": r.threshold,
                "b_message": r.message,
                "b_last_evaluated_ms": r.last_evaluated_ms,
                "b_last_evaluation": r.last_evaluation,
                "b_resolved_ms": r.resolved_ms,
            }
            for r in rows
        ],
    )


def acknowledge(conn: Connection, alert_id: str, by: str, note: str | None, now_ms: int) -> bool:
    """Move a firing alert to acknowledged; False (nothing written) when it is not firing."""
    a = alerts.c
    result = conn.execute(
        update(alerts)
        .where(a.alert_id == alert_id, a.state == AlertState.FIRING.value)
        .values(
            state=AlertState.ACKNOWLEDGED.value, acknowledged_ms=now_ms, acknowledged_by=by, ack_note=note
        )
    )
    return bool(result.rowcount)


def insert_transitions(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(alert_transitions.insert(), list(rows))


def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(alert_deliveries.insert(), rows)


@dataclass(frozen=True, slots=True)
class Silence:
    """The Alertmanager silence standing for an acknowledged alert: its id, until when it runs, and the
    severity label it matches."""

    silence_id: str
    ends_ms: int
    severity: str


def alerts_with_silences(
    conn: Connection, alert_ids: Iterable[str]
) -> dict[str, tuple[AlertRecord, Silence | None]]:
    """The alerts of ``alert_ids`` that still exist, each with its silence, in one statement."""
    ids = sorted(set(alert_ids))
    if not ids:
        return {}
    out: dict[str, tuple[AlertRecord, Silence | None]] = {}
    for row in conn.execute(select(alerts).where(alerts.c.alert_id.in_(ids))):
        m = row._mapping
        silence = None
        if m["silence_id"] is not None:
            silence = Silence(m["silence_id"], int(m["silence_ends_ms"]), m["silence_severity"])
        out[m["alert_id"]] = (_record(row), silence)
    return out


def set_silences(conn: Connection, silences: dict[str, Silence | None]) -> None:
    """Record (or clear, with None) the silence of each alert, in one executemany."""
    if not silences:
        return
    a = alerts.c
    statement = (
        update(alerts)
        .where(a.alert_id == bindparam("b_id"))
        .values(
            silence_id=bindparam("b_silence"),
            silence_ends_ms=bindparam("b_ends"),
            silence_severity=bindparam("b_severity"),
        )
    )
    conn.execute(
        statement,
        [
            {
                "b_id": alert_id,
                "b_silence": s.silence_id if s else None,
                "b_ends": s.ends_ms if s else None,
                "b_severity": s.severity if s else None,
            }
            for alert_id, s in sorted(silences.items())
        ],
    )


def get_alert(conn: Connection, alert_id: str) -> AlertRecord | None:
    row = conn.execute(select(alerts).where(alerts.c.alert_id == alert_id)).first()
    return None if row is None else _record(row)


def transitions_of(conn: Connection, alert_id: str) -> list[dict[str, Any]]:
    t = alert_transitions.c
    query = select(alert_transitions).where(t.alert_id == alert_id).order_by(t.transition_id)
    return [dict(r._mapping) for r in conn.execute(query)]


def deliveries_of(conn: Connection, alert_id: str) -> list[dict[str, Any]]:
    d = alert_deliveries.c
    query = select(alert_deliveries).where(d.alert_id == alert_id).order_by(d.delivery_id)
    return [dict(r._mapping) for r in conn.execute(query)]


@dataclass(frozen=True, slots=True)
class AlertFilter:
    states: tuple[str, ...] = ()
    severity: str | None = None
    rule: str | None = None
    scope: str | None = None  # "" = platform-wide alerts only


def list_alerts(
    conn: Connection, f: AlertFilter, after: tuple[int, str] | None, limit: int
) -> list[AlertRecord]:
    """Newest first by (started_ms, alert_id); ``after`` is the last (started_ms, alert_id) seen."""
    a = alerts.c
    conds: list[Any] = []
    if f.states:
        conds.append(a.state.in_(f.states))
    if f.severity is not None:
        conds.append(a.severity == f.severity)
    if f.rule is not None:
        conds.append(a.rule == f.rule)
    if f.scope is not None:
        conds.append(a.scope == f.scope)
    if after is not None:
        started, alert_id = after
        conds.append(or_(a.started_ms < started, and_(a.started_ms == started, a.alert_id < alert_id)))
    query = select(alerts).where(*conds).order_by(a.started_ms.desc(), a.alert_id.desc()).limit(limit)
    return [_record(r) for r in conn.execute(query)]


# --- rule configurations ----------------------------------------------------------------------------------


def rule_configs(conn: Connection) -> dict[str, tuple[str, int, str]]:
    """rule -> (config JSON, updated_ms, updated_by) of the rules changed from their defaults."""
    r = alert_rules.c
    return {
        rule: (config, int(at), by)
        for rule, config, at, by in conn.execute(select(r.rule, r.config, r.updated_ms, r.updated_by))
    }


def save_rule(conn: Connection, rule: str, before: str, after: str, by: str, now_ms: int) -> None:
    conn.execute(
        upsert_replace(conn, alert_rules, ["rule"], ["config", "updated_ms", "updated_by"]),
        [{"rule": rule, "config": after, "updated_ms": now_ms, "updated_by": by}],
    )
    conn.execute(
        alert_rule_changes.insert(),
        [{"rule": rule, "changed_ms": now_ms, "changed_by": by, "before": before, "after": after}],
    )


def rule_changes(conn: Connection, rule: str, limit: int) -> list[dict[str, Any]]:
    c = alert_rule_changes.c
    query = select(alert_rule_changes).where(c.rule == rule).order_by(c.change_id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


# --- grouped reads for an evaluation ----------------------------------------------------------------------


def artifact_counts(conn: Connection, stuck_before_ms: int) -> dict[str, tuple[int, int]]:
    """Per owner ("" = no organization): (active, stuck) artifacts, in one GROUP BY."""
    c = artifacts.c
    stuck = func.sum(case((c.last_event_at_ms < stuck_before_ms, 1), else_=0))
    query = (
        select(c.owner, func.count(), stuck)
        .where(c.status.in_([s.value for s in ACTIVE_STATUSES]))
        .group_by(c.owner)
    )
    return {owner: (int(active), int(stuck or 0)) for owner, active, stuck in conn.execute(query)}


WATCHED_TYPES = (
    EventType.CIRCUIT_BREAKER_OPENED,
    EventType.CIRCUIT_BREAKER_CLOSED,
    EventType.BUDGET_EXCEEDED,
    EventType.BUDGET_THRESHOLD_REACHED,
)


def watched_events(
    conn: Connection, since_ms: int, recent_ms: int, until_ms: int
) -> list[tuple[str | None, EventType, int, int]]:
    """Per (organization, type) of :data:`WATCHED_TYPES` in ``[since_ms, until_ms]``: the newest time,
    and how many are at or after ``recent_ms``."""
    e = events.c
    recent = func.sum(case((e.ts_ms >= recent_ms, 1), else_=0))
    query = (
        select(e.organization_id, e.event_type, func.max(e.ts_ms), recent)
        .where(e.ts_ms >= since_ms, e.ts_ms <= until_ms, e.event_type.in_([t.value for t in WATCHED_TYPES]))
        .group_by(e.organization_id, e.event_type)
    )
    return [(org, EventType(t), int(newest), int(n or 0)) for org, t, newest, n in conn.execute(query)]


def undeliverable_retries(conn: Connection, since_ms: int) -> dict[str, int]:
    """Per owner: retries that ended undeliverable since ``since_ms``."""
    r = retries.c
    query = (
        select(r.owner, func.count())
        .where(
            r.status == RetryStatus.FAILED.value,
            r.finished_ms >= since_ms,
            r.error.like("undeliverable%"),
        )
        .group_by(r.owner)
    )
    return {owner: int(n) for owner, n in conn.execute(query)}


def sampled_rows(
    conn: Connection, start_ms: int, end_ms: int, columns: dict[str, str], least: int, scopes: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Per scope of ``scopes``, per key of ``columns`` (a sample-count column of the snapshot table): how
    many hourly rows in ``[start_ms, end_ms)`` hold at least ``least`` samples. One GROUP BY."""
    s = snapshots.c
    sums = [func.sum(case((s[col] >= least, 1), else_=0)) for col in columns.values()]
    query = (
        select(s.scope, *sums)
        .where(
            s.period_type == "hourly",
            s.period_start_ms >= start_ms,
            s.period_start_ms < end_ms,
            s.scope.in_(sorted(scopes)),
        )
        .group_by(s.scope)
    )
    keys = list(columns)
    return {
        scope: dict(zip(keys, (int(v or 0) for v in values), strict=True))
        for scope, *values in conn.execute(query)
    }


def aggregated_hours(conn: Connection, start_ms: int, end_ms: int) -> int:
    """How many hours in ``[start_ms, end_ms)`` were aggregated (each has a platform-wide row)."""
    s = snapshots.c
    query = select(func.count()).where(
        s.period_type == "hourly", s.scope == "", s.period_start_ms >= start_ms, s.period_start_ms < end_ms
    )
    return int(conn.scalar(query) or 0)


def busy_days(conn: Connection, hour_starts: Sequence[int], least: int) -> dict[str, int]:
    """Per scope: how many of the hourly rows at ``hour_starts`` received at least ``least`` artifacts."""
    s = snapshots.c
    query = (
        select(s.scope, func.count())
        .where(
            s.period_type == "hourly",
            s.period_start_ms.in_(list(hour_starts)),
            s.artifacts_received >= least,
        )
        .group_by(s.scope)
    )
    return {scope: int(n) for scope, n in conn.execute(query)}
