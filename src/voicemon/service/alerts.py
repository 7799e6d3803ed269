"""Alert use cases (SPEC 14): one evaluation of every rule for every scope, acknowledgement, the alert list
and rule changes. Notifications go through the outbox (SPEC 15, :mod:`voicemon.service.alert_delivery`).

An evaluation reads everything in one read transaction, with a fixed number of grouped statements
whatever the number of organizations: the raw events of the last 30 and 60 minutes
(:func:`~voicemon.service.aggregate.parts_from_events`), the hourly rows of the last 7 days (merged per
scope from blocks, in one read), the sample counts and busy hours of those rows, artifact counts, watched
events and undeliverable retries. The rules decide in pure code (:mod:`voicemon.domain.alerts`). Then one
write transaction, opened by taking the evaluator's row (so two evaluations take turns), re-reads the
open alerts and streaks, applies every step, and enqueues the notifications.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.access import READERS, STAFF_ONLY, Principal, require_role, visible_organization
from voicemon.domain.alerts import (
    BASELINE_MIN_SAMPLES,
    DEFAULT_CONFIGS,
    INACTIVITY_BUSY_RECEIVED,
    OPEN_STATES,
    RULES,
    Action,
    AlertState,
    OpenAlert,
    Reading,
    RuleConfig,
    RuleName,
    ScopeInputs,
    Severity,
    Streak,
    TransitionKind,
    Verdict,
    evaluate,
    step,
    with_changes,
)
from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.cursor import decode_cursor, encode_cursor
from voicemon.domain.model import MEASURED_STAGES, EventType
from voicemon.domain.periods import Period
from voicemon.domain.snapshot import SnapshotParts, merge_parts
from voicemon.domain.snapshot_layout import LATENCY_SLOTS, reads
from voicemon.domain.text import require_text
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.errors import ConflictError, NotFoundError, ValidationError
from voicemon.service.aggregate import parts_from_events
from voicemon.service.alert_delivery import Channel
from voicemon.service.metrics import Range, range_cover
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import alerts as alert_store
from voicemon.storage import orgs as org_store
from voicemon.storage import outbox as outbox_store
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.alerts import AlertFilter, AlertRecord, Fingerprint
from voicemon.storage.snapshots import ALL_SCOPES

logger = logging.getLogger(__name__)

EVALUATOR = "alerts"
MAX_NOTE_CHARS = 2000
# What a 7-day latency and cost baseline reads of the hourly rows.
_COST_READS = reads(["total_ai_cost_usd"])
_LATENCY_READS = reads(["stages", "end_to_end_latency_ms"])
_SAMPLE_COLUMNS = {(slot.stage.value if slot.stage else ""): slot.count_column for slot in LATENCY_SLOTS}


# Which transitions each notification channel is told about (SPEC 15).
NOTIFIES: dict[str, frozenset[TransitionKind]] = {
    Channel.WEBHOOK: frozenset(TransitionKind),
    Channel.SLACK: frozenset({TransitionKind.FIRED, TransitionKind.ESCALATED, TransitionKind.RESOLVED}),
}


@dataclass(frozen=True, slots=True)
class AlertDetail:
    alert: AlertRecord
    name: str | None
    transitions: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AlertPage:
    items: list[tuple[AlertRecord, str | None]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class RuleView:
    config: RuleConfig
    per_stage: bool
    updated_ms: int | None
    updated_by: str | None


def alert_body(alert: AlertRecord, name: str | None) -> dict[str, Any]:
    """The alert as the API, the webhook and the dashboard show it (SPEC 14 fields)."""

    def t(ms: int | None) -> str | None:
        return None if ms is None else format_time(ms)

    body: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "severity": alert.severity.value,
        "stage": alert.stage or None,
        "state": alert.state.value,
        "value": alert.value,
        "threshold": alert.threshold,
        "message": alert.message,
        "started_at": t(alert.started_ms),
        "last_evaluated_at": t(alert.last_evaluated_ms),
        "last_evaluation": alert.last_evaluation,
        "acknowledged_at": t(alert.acknowledged_ms),
        "acknowledged_by": alert.acknowledged_by,
        "ack_note": alert.ack_note,
        "resolved_at": t(alert.resolved_ms),
    }
    if alert.scope:  # a platform-wide alert has no organization keys at all
        body["organization_id"] = alert.scope
        body["organization_name"] = name
    return body


class AlertService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        channels: Callable[[], Iterable[str]],
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._channels = channels
        self._on_commit = on_commit

    # --- evaluation -----------------------------------------------------------------------------------

    def evaluate(self, principal: Principal) -> dict[str, Any]:
        """One evaluation of every enabled rule for every scope with traffic or an open alert (staff: the
        scheduled job runs it as SYSTEM)."""
        require_role(principal, *STAFF_ONLY)
        now_ms = self._clock.now_ms()
        with self._db.read() as conn, conn.begin():
            configs = self._configs(conn)
            latency_rules = [
                configs[r]
                for r in (RuleName.STAGE_LATENCY, RuleName.END_TO_END_LATENCY)
                if configs[r].enabled
            ]
            least = min((c.min_volume for c in latency_rules), default=None)
            inputs = gather_inputs(conn, now_ms, self._settings, least)
        readings = [
            r
            for cfg in configs.values()
            if cfg.enabled
            for scope in inputs.values()
            for r in evaluate(cfg, scope)
        ]
        with self._db.write() as conn:
            alert_store.take_evaluator(conn, EVALUATOR, now_ms)
            summary = self._apply(conn, configs, readings, now_ms)
        self._on_commit()
        summary["scopes"] = len(inputs)
        summary["readings"] = len(readings)
        logger.info("alerts evaluated", extra={"action": "alerts_evaluated", **summary})
        return summary

    def _apply(
        self, conn: Connection, configs: dict[RuleName, RuleConfig], readings: list[Reading], now_ms: int
    ) -> dict[str, Any]:
        open_now = {a.fingerprint: a for a in alert_store.open_alerts(conn)}
        old_streaks = alert_store.streaks(conn)
        keep: dict[Fingerprint, Streak] = {}
        inserts: list[AlertRecord] = []
        updates: list[AlertRecord] = []
        transitions: list[dict[str, Any]] = []
        notices: list[tuple[TransitionKind, AlertRecord]] = []
        counts = dict.fromkeys(("fired", "escalated", "resolved"), 0)
        seen: set[Fingerprint] = set()
        for reading in readings:
            fp = reading.fingerprint
            seen.add(fp)
            config = configs[reading.rule]
            alert = open_now.get(fp)
            current = OpenAlert(alert.alert_id, alert.severity, alert.state) if alert else None
            decided = step(config, reading, old_streaks.get(fp, Streak()), current)
            if decided.streak != Streak():  # ``step`` keeps no clear streak without an open alert
                keep[fp] = decided.streak
            if decided.action is Action.FIRE:
                assert reading.severity is not None
                new = AlertRecord(
                    alert_id=str(uuid.uuid4()),
                    rule=reading.rule.value,
                    scope=reading.scope,
                    stage=reading.stage,
                    severity=reading.severity,
                    state=AlertState.FIRING,
                    value=reading.value,
                    threshold=reading.threshold,
                    message=reading.message,
                    started_ms=now_ms,
                    last_evaluated_ms=now_ms,
                    last_evaluation=reading.verdict.value,
                    acknowledged_ms=None,
                    acknowledged_by=None,
                    ack_note=None,
                    resolved_ms=None,
                )
                inserts.append(new)
                transitions.append(_transition(new, TransitionKind.FIRED, now_ms))
                notices.append((TransitionKind.FIRED, new))
                counts["fired"] += 1
            elif alert is not None:
                changed = replace(
                    alert,
                    last_evaluated_ms=now_ms,
                    last_evaluation=reading.verdict.value,
                    **_figures(reading, alert),
                )
                if decided.action is Action.ESCALATE:
                    assert reading.severity is not None
                    changed = replace(changed, severity=reading.severity)
                    transitions.append(_transition(changed, TransitionKind.ESCALATED, now_ms))
                    notices.append((TransitionKind.ESCALATED, changed))
                    counts["escalated"] += 1
                elif decided.action is Action.RESOLVE:
                    changed = replace(changed, state=AlertState.RESOLVED, resolved_ms=now_ms)
                    transitions.append(_transition(changed, TransitionKind.RESOLVED, now_ms))
                    notices.append((TransitionKind.RESOLVED, changed))
                    counts["resolved"] += 1
                updates.append(changed)
        # An open alert of a rule now disabled resolves: nobody evaluates it any more.
        for fp, alert in open_now.items():
            if fp not in seen and not configs[RuleName(alert.rule)].enabled:
                gone = replace(alert, state=AlertState.RESOLVED, resolved_ms=now_ms, last_evaluated_ms=now_ms)
                updates.append(gone)
                transitions.append(_transition(gone, TransitionKind.RESOLVED, now_ms, note="rule disabled"))
                notices.append((TransitionKind.RESOLVED, gone))
                counts["resolved"] += 1
            elif fp not in seen:
                keep.setdefault(fp, old_streaks.get(fp, Streak()))
        alert_store.insert_alerts(conn, inserts)
        alert_store.update_alerts(conn, updates)
        alert_store.insert_transitions(conn, transitions)
        alert_store.save_streaks(conn, keep, set(old_streaks) - set(keep))
        self._notify(conn, notices, now_ms)
        touched = {a.alert_id: a for a in (*open_now.values(), *inserts, *updates)}
        before = {a.alert_id: a.severity.value for a in open_now.values()}
        self._sync_alertmanager(conn, list(touched.values()), notices, before, now_ms)
        still_open = sum(a.state in OPEN_STATES for a in (*inserts, *updates))
        return {**counts, "open": still_open}

    def _notify(
        self, conn: Connection, notices: list[tuple[TransitionKind, AlertRecord]], now_ms: int
    ) -> None:
        """Enqueue one entry per channel that hears of each transition, in the caller's transaction."""
        if not notices:
            return
        channels = sorted(self._channels())
        names = org_store.names_of(conn, {a.scope for _, a in notices if a.scope})
        entries = []
        for kind, alert in notices:
            payload = orjson.dumps(
                {"notification": f"alert.{kind.value}", "alert": alert_body(alert, names.get(alert.scope))}
            ).decode()
            entries += [
                (channel, alert.alert_id, payload)
                for channel in channels
                if kind in NOTIFIES.get(channel, frozenset())
            ]
        outbox_store.enqueue_many(conn, entries, now_ms)

    def _sync_alertmanager(
        self,
        conn: Connection,
        alerts: list[AlertRecord],
        notices: list[tuple[TransitionKind, AlertRecord]],
        severity_before: dict[str, str],
        now_ms: int,
    ) -> None:
        """Enqueue one Alertmanager sync naming ``alerts`` (with what happened to each, and the severity
        an escalated one had), when that channel is configured and there is anything to say."""
        if Channel.ALERTMANAGER not in self._channels() or not alerts:
            return
        happened = {a.alert_id: kind for kind, a in notices}
        items = []
        for alert in sorted(alerts, key=lambda a: a.alert_id):
            kind = happened.get(alert.alert_id)
            item: dict[str, Any] = {
                "alert_id": alert.alert_id,
                "notification": f"alert.{kind.value}" if kind else None,
            }
            if kind is TransitionKind.ESCALATED:
                item["previous_severity"] = severity_before.get(alert.alert_id)
            items.append(item)
        payload = orjson.dumps({"alerts": items}).decode()
        outbox_store.enqueue_many(conn, [(Channel.ALERTMANAGER, EVALUATOR, payload)], now_ms)

    def _configs(self, conn: Connection) -> dict[RuleName, RuleConfig]:
        stored = alert_store.rule_configs(conn)
        out = dict(DEFAULT_CONFIGS)
        known = {r.value for r in RuleName}
        for rule, (config, _, _) in stored.items():
            if rule in known:  # a rule a newer version stored is not ours to evaluate
                out[RuleName(rule)] = RuleConfig.from_dict(orjson.loads(config))
        return out

    # --- acknowledgement ------------------------------------------------------------------------------

    def acknowledge(self, principal: Principal, alert_id: str, note: str | None) -> AlertDetail:
        """Staff acknowledge a firing alert: it stays open and resolves by itself. A resolved or already
        acknowledged alert is refused (409), with nothing written. Returns the alert as committed."""
        require_role(principal, *STAFF_ONLY)
        if note is not None and note.strip():
            note = require_text("note", note, max_chars=MAX_NOTE_CHARS)
        else:
            note = None
        who = principal.name or principal.key_id
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            if not alert_store.acknowledge(conn, alert_id, who, note, now_ms):
                found = alert_store.get_alert(conn, alert_id)
                if found is None:
                    raise NotFoundError(f"no alert {alert_id!r}", code="alert_not_found")
                raise ConflictError(
                    f"the alert is {found.state.value} already: only a firing alert can be acknowledged",
                    code=f"alert_{found.state.value}",
                )
            alert = alert_store.get_alert(conn, alert_id)
            assert alert is not None
            alert_store.insert_transitions(
                conn,
                [_transition(alert, TransitionKind.ACKNOWLEDGED, now_ms, actor=who, note=note)],
            )
            self._notify(conn, [(TransitionKind.ACKNOWLEDGED, alert)], now_ms)
            self._sync_alertmanager(conn, [alert], [(TransitionKind.ACKNOWLEDGED, alert)], {}, now_ms)
            detail = _detail(conn, alert)
        self._on_commit()
        return detail

    # --- reads ----------------------------------------------------------------------------------------

    def list_alerts(
        self,
        principal: Principal,
        *,
        state: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        organization_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> AlertPage:
        """Newest first. ``state`` is ``open`` (firing or acknowledged) or one state. An organization's
        key sees only its organization's alerts."""
        require_role(principal, *READERS)
        scope = visible_organization(principal, organization_id)
        states: tuple[str, ...] = ()
        if state == "open":
            states = tuple(s.value for s in OPEN_STATES)
        elif state is not None:
            states = (AlertState(state).value,)
        f = AlertFilter(states, severity, rule, scope)
        filter_key = [",".join(states), severity, rule, scope]
        after = None
        if cursor is not None:
            started, last_id = decode_cursor(cursor, "alerts", filter_key, int, str)
            after = (int(started), str(last_id))
        with self._db.read() as conn, conn.begin():
            rows = alert_store.list_alerts(conn, f, after, limit + 1)
            names = org_store.names_of(conn, {a.scope for a in rows if a.scope})
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            encode_cursor("alerts", filter_key, (rows[-1].started_ms, rows[-1].alert_id)) if more else None
        )
        return AlertPage([(a, names.get(a.scope)) for a in rows], next_cursor)

    def get(self, principal: Principal, alert_id: str) -> AlertDetail:
        require_role(principal, *READERS)
        with self._db.read() as conn, conn.begin():
            alert = alert_store.get_alert(conn, alert_id)
            if alert is None or (principal.organization_id and alert.scope != principal.organization_id):
                raise NotFoundError(f"no alert {alert_id!r}", code="alert_not_found")
            return _detail(conn, alert)

    # --- rules ----------------------------------------------------------------------------------------

    def rules(self, principal: Principal) -> list[RuleView]:
        require_role(principal, *READERS)
        with self._db.read() as conn, conn.begin():
            stored = alert_store.rule_configs(conn)
            configs = self._configs(conn)
        out = []
        for name, config in configs.items():
            meta = stored.get(name.value)
            updated = (meta[1], meta[2]) if meta else (None, None)
            out.append(RuleView(config, RULES[name].per_stage, *updated))
        return out

    def update_rule(self, principal: Principal, rule: str, changes: dict[str, Any]) -> RuleView:
        """Staff change a rule; the change is checked whole, recorded with who and when, and applies from
        the next evaluation."""
        require_role(principal, *STAFF_ONLY)
        try:
            name = RuleName(rule)
        except ValueError:
            raise NotFoundError(
                f"no alert rule {rule!r}; rules: {', '.join(r.value for r in RuleName)}",
                code="rule_not_found",
            ) from None
        changeable = set(RuleConfig.CHANGEABLE)
        for key, value in changes.items():
            if key not in changeable:
                raise ValidationError(
                    f"is not a rule setting; settings: {', '.join(RuleConfig.CHANGEABLE)}",
                    code="unknown_field",
                    field=key,
                )
            if value is None:
                raise ValidationError("must not be null", code="invalid_rule", field=key)
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            before = self._configs(conn)[name]
            try:
                after = with_changes(before, changes)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValidationError(
                    f"is not a valid rule change: {exc}", code="invalid_rule", field="body"
                ) from exc
            alert_store.save_rule(
                conn,
                name.value,
                orjson.dumps(before.to_dict()).decode(),
                orjson.dumps(after.to_dict()).decode(),
                principal.name or principal.key_id,
                now_ms,
            )
        return RuleView(after, RULES[name].per_stage, now_ms, principal.name or principal.key_id)


def _detail(conn: Connection, alert: AlertRecord) -> AlertDetail:
    names = org_store.names_of(conn, [alert.scope] if alert.scope else [])
    transitions = alert_store.transitions_of(conn, alert.alert_id)
    deliveries = alert_store.deliveries_of(conn, alert.alert_id)
    return AlertDetail(alert, names.get(alert.scope), transitions, deliveries)


def _figures(reading: Reading, alert: AlertRecord) -> dict[str, Any]:
    """The figures an evaluation writes on its open alert: the newest value and message while breaching;
    while clear or unknown, the value seen, but the message of the breach stays (it says why it fired)."""
    if reading.verdict is Verdict.BREACHING:
        return {"value": reading.value, "threshold": reading.threshold, "message": reading.message}
    return {"value": reading.value}


def _transition(
    alert: AlertRecord,
    kind: TransitionKind,
    now_ms: int,
    *,
    actor: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id,
        "at_ms": now_ms,
        "kind": kind.value,
        "severity": alert.severity.value,
        "value": alert.value,
        "threshold": alert.threshold,
        "actor": actor,
        "note": note,
    }


# --- inputs, gathered for every scope at once ---------------------------------------------------------------


def _most_samples(parts: SnapshotParts) -> int:
    return int(max([parts.end_to_end.count, *(parts.stages[s].latency.count for s in MEASURED_STAGES)]))


def gather_inputs(
    conn: Connection,
    now_ms: int,
    settings: Settings,
    latency_min_samples: float | None = BASELINE_MIN_SAMPLES,
) -> dict[str, ScopeInputs]:
    """One :class:`ScopeInputs` per scope with anything to judge: the platform, every organization seen
    in one of the reads, and every organization with an open alert. A fixed number of statements.
    ``latency_min_samples``: the fewest samples of the last 60 minutes a latency rule judges (None: no
    latency rule is enabled); latency baselines are read only for the scopes that reach it."""
    end = now_ms + 1
    # The 30-minute rules read counts only (failure rates): a plain GROUP BY, no latency samples. The
    # 60-minute rules need the latencies, sketched from the raw durations.
    last30 = parts_from_events(conn, now_ms - 30 * MINUTE_MS, end, ALL_SCOPES, samples=False)
    last60 = parts_from_events(conn, now_ms - 60 * MINUTE_MS, end, ALL_SCOPES)
    hour = floor_to(now_ms, HOUR_MS)
    week_start = hour - 7 * DAY_MS
    cover = range_cover(conn, Range(Period.HOURLY, week_start, hour), now_ms, settings.hourly_retention_ms)
    hourly = Period.HOURLY.value
    week = {
        t.scope: t.parts
        for t in snapshot_store.org_totals(conn, hourly, cover, _COST_READS, with_platform=True)
    }
    # Latency baselines (sketches, the costly part) only where a latency rule can judge now: a scope whose
    # last 60 minutes hold enough samples of some stage or end to end. Most organizations, most of the
    # time, do not.
    judged = set()
    if latency_min_samples is not None:
        judged = {s for s, p in last60.items() if _most_samples(p) >= latency_min_samples}
    if judged:
        for t in snapshot_store.org_totals(
            conn, hourly, cover, _LATENCY_READS, with_platform=True, scopes=judged
        ):
            week[t.scope] = merge_parts([week.get(t.scope, SnapshotParts()), t.parts])
    hours = alert_store.aggregated_hours(conn, week_start, hour)
    sampled = {}
    if judged:
        sampled = alert_store.sampled_rows(
            conn, week_start, hour, _SAMPLE_COLUMNS, BASELINE_MIN_SAMPLES, judged
        )
    # The hour of day the last 60 minutes mostly fall in, on each of the 7 days before.
    this_hour = floor_to(now_ms - 30 * MINUTE_MS, HOUR_MS)
    busy = alert_store.busy_days(
        conn, [this_hour - d * DAY_MS for d in range(1, 8)], INACTIVITY_BUSY_RECEIVED
    )
    counts = alert_store.artifact_counts(conn, now_ms - settings.stuck_after_ms)
    watched = alert_store.watched_events(conn, now_ms - DAY_MS, now_ms - 60 * MINUTE_MS, now_ms)
    undeliverable = alert_store.undeliverable_retries(conn, now_ms - 60 * MINUTE_MS)
    open_scopes = {a.scope for a in alert_store.open_alerts(conn)}

    scopes = {PLATFORM_SCOPE} | set(last30) | set(last60) | set(busy) | set(counts) | open_scopes
    scopes |= {org or "" for org, *_ in watched} | set(undeliverable)
    names = org_store.names_of(conn, sorted(s for s in scopes if s))
    out = {s: ScopeInputs(s, names.get(s)) for s in sorted(scopes)}
    for s, inputs in out.items():
        inputs.last30 = last30.get(s, SnapshotParts())
        inputs.last60 = last60.get(s, SnapshotParts())
        inputs.week = week.get(s, SnapshotParts())
        inputs.week_hours = hours
        inputs.week_sampled_rows = sampled.get(s, {})
        inputs.busy_days_this_hour = busy.get(s, 0)
    # An organization's artifacts count for it and for the platform; those without one, once.
    for owner, (active, stuck) in counts.items():
        for target in {owner, PLATFORM_SCOPE}:
            out[target].active += active
            out[target].stuck += stuck
    for owner, n in undeliverable.items():
        for target in {owner, PLATFORM_SCOPE}:
            out[target].undeliverable_retries += n
    _apply_watched(out, watched)
    return out


def _apply_watched(
    out: dict[str, ScopeInputs], watched: list[tuple[str | None, EventType, int, int]]
) -> None:
    """Circuit breakers (the newest event of the last 24 h decides) and budget events (last 60 min), per
    organization and platform-wide."""
    newest: dict[str, dict[EventType, int]] = {}
    recent: dict[str, set[EventType]] = {}
    for org, event_type, at, n_recent in watched:
        for scope in {org or "", PLATFORM_SCOPE}:
            seen = newest.setdefault(scope, {})
            seen[event_type] = max(seen.get(event_type, at), at)
            if n_recent:
                recent.setdefault(scope, set()).add(event_type)
    for scope, seen in newest.items():
        opened = seen.get(EventType.CIRCUIT_BREAKER_OPENED)
        closed = seen.get(EventType.CIRCUIT_BREAKER_CLOSED)
        out[scope].breaker_open = opened is not None and (closed is None or opened > closed)
    for scope, types in recent.items():
        if EventType.BUDGET_EXCEEDED in types:
            out[scope].budget = Severity.HIGH
        elif EventType.BUDGET_THRESHOLD_REACHED in types:
            out[scope].budget = Severity.MEDIUM
