"""Alerts through the service layer (SPEC 14, 15): thresholds, minimum volume, scopes, the lifecycle on the
injected clock, acknowledgement, rule changes, notifications through the outbox, and evaluations that
race. The HTTP API over these use cases comes with its routes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import NOW_MS, STAFF, StatementCounter
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain.access import Principal, Role
from voicemon.domain.model import Stage
from voicemon.domain.snapshot import SnapshotParts
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, floor_to
from voicemon.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from voicemon.service import Services
from voicemon.service.retention import Retention
from voicemon.service.transports import RecordingTransport
from voicemon.settings import Settings
from voicemon.storage import alerts as alert_store
from voicemon.storage import snapshots as snapshot_store

VIEWER_A = Principal("viewer-a", "viewer a", Role.VIEWER, "org-a")
EVAL_STEP_MS = 5 * MINUTE_MS


@pytest.fixture
def channels() -> dict[str, RecordingTransport]:
    return {"alert_webhook": RecordingTransport(), "alert_slack": RecordingTransport()}


@pytest.fixture
def svc(settings: Settings, clock: FakeClock, channels: dict[str, Any]) -> Iterator[Services]:
    s = Services(settings, clock, alert_transports=channels)
    s.start()
    yield s
    s.stop()


_n = iter(range(10**9))


def ended(svc: Services, org: str | None, completed: int, failed: int, at_ms: int) -> None:
    """Artifacts that ended at ``at_ms``: ``completed`` completed and ``failed`` failed."""
    batch = []
    for i in range(completed + failed):
        aid = f"art-{next(_n)}"
        extra = {"organization_id": org} if org else {}
        batch.append(ev("artifact_received", aid, at_ms - 1000, **extra))
        batch.append(ev("artifact_completed" if i < completed else "artifact_failed", aid, at_ms, **extra))
    svc.ingest_blocking(batch, STAFF)


def open_alerts(
    svc: Services, rule: str = "failure_rate", scope: str | None = None
) -> list[alert_store.AlertRecord]:
    """Open alerts of a rule, of one scope ("" = platform) or of all."""
    found = [a for a, _ in svc.alerts.list_alerts(STAFF, state="open", rule=rule).items]
    return [a for a in found if scope is None or a.scope == scope]


def notifications(channel: RecordingTransport) -> list[str]:
    return [orjson.loads(d.body).get("type", "slack") for d in channel.delivered]


def test_at_the_threshold_nothing_fires_and_just_above_it_fires(svc: Services, clock: FakeClock) -> None:
    ended(svc, "org-a", 18, 2, NOW_MS - MINUTE_MS)  # exactly 10 %: not a breach
    svc.alerts.evaluate(STAFF)
    assert open_alerts(svc) == []
    ended(svc, "org-a", 0, 1, NOW_MS - MINUTE_MS)  # 3 of 21: 14.3 %, above 10 % (high)
    svc.alerts.evaluate(STAFF)
    # org-a's traffic is all the platform's: both scopes breach, each with an alert of its own.
    alerts = sorted(open_alerts(svc), key=lambda a: a.scope)
    assert [(a.scope, a.severity.value, a.threshold) for a in alerts] == [
        ("", "high", 0.10),
        ("org-a", "high", 0.10),
    ]
    assert alerts[1].message == (
        "Failure rate 14.3 % over the last 30 min (threshold 10 %), 21 ended artifacts, org org-a"
    )
    assert alerts[0].message.endswith(", platform-wide")


def test_below_the_minimum_volume_it_is_insufficient_data_and_neither_fires_nor_clears(
    svc: Services, clock: FakeClock
) -> None:
    ended(svc, "org-a", 0, 19, NOW_MS - MINUTE_MS)  # 100 % of 19: below the 20 ended it needs
    svc.alerts.evaluate(STAFF)
    assert open_alerts(svc) == []
    ended(svc, "org-a", 0, 1, NOW_MS - MINUTE_MS)
    svc.alerts.evaluate(STAFF)
    [alert] = open_alerts(svc, scope="org-a")
    assert alert.severity.value == "critical"
    # Half an hour later the window is empty: too little data to clear, and the alert says so.
    clock.advance(31 * MINUTE_MS)
    for _ in range(3):
        svc.alerts.evaluate(STAFF)
        clock.advance(EVAL_STEP_MS)
    [still] = open_alerts(svc, scope="org-a")
    assert still.alert_id == alert.alert_id
    assert still.last_evaluation == "insufficient_data"


def test_an_organizations_breach_opens_its_own_alert_only(svc: Services) -> None:
    ended(svc, "org-a", 14, 6, NOW_MS - MINUTE_MS)  # org-a: 30 %
    ended(svc, "org-b", 100, 0, NOW_MS - MINUTE_MS)  # platform: 6 of 120, 5 %
    svc.alerts.evaluate(STAFF)
    assert [(a.scope, a.severity.value) for a in open_alerts(svc)] == [("org-a", "critical")]
    ended(svc, None, 10, 60, NOW_MS - MINUTE_MS)  # platform traffic without an organization
    svc.alerts.evaluate(STAFF)
    scopes = sorted(a.scope for a in open_alerts(svc))
    assert scopes == ["", "org-a"]  # the platform alert follows platform traffic
    assert svc.alerts.list_alerts(VIEWER_A, state="open").items[0][0].scope == "org-a"
    assert [a.scope for a, _ in svc.alerts.list_alerts(VIEWER_A, state="open").items] == ["org-a"]
    with pytest.raises(ForbiddenError):
        svc.alerts.list_alerts(VIEWER_A, organization_id="org-b")


def test_the_lifecycle_fire_escalate_ack_clear_resolve_and_fire_anew(
    svc: Services, clock: FakeClock, channels: dict[str, RecordingTransport]
) -> None:
    webhook, slack = channels["alert_webhook"], channels["alert_slack"]

    def evaluate() -> None:
        svc.alerts.evaluate(STAFF)
        svc.dispatcher.flush()
        clock.advance(EVAL_STEP_MS)

    # org-b's many completions keep the platform's rate low: only org-a breaches.
    ended(svc, "org-b", 200, 0, clock.now_ms() - MINUTE_MS)
    ended(svc, "org-a", 17, 3, clock.now_ms() - MINUTE_MS)  # 15 %: high
    evaluate()
    [alert] = open_alerts(svc)
    assert notifications(webhook) == ["alert.fired"]
    evaluate()  # still breaching at the same severity: nothing new
    assert notifications(webhook) == ["alert.fired"]
    ended(svc, "org-a", 0, 10, clock.now_ms() - MINUTE_MS)  # 13 of 30: 43 %, critical
    evaluate()
    [same] = open_alerts(svc)
    assert (same.alert_id, same.severity.value) == (alert.alert_id, "critical")
    assert notifications(webhook) == ["alert.fired", "alert.escalated"]

    acked = svc.alerts.acknowledge(STAFF, alert.alert_id, "looking into the ASR provider").alert
    svc.dispatcher.flush()
    assert (acked.state.value, acked.acknowledged_by, acked.ack_note) == (
        "acknowledged",
        "staff",
        "looking into the ASR provider",
    )
    evaluate()  # still breaching: acknowledged, so nothing more on the webhook or Slack
    assert notifications(webhook) == ["alert.fired", "alert.escalated", "alert.acknowledged"]
    assert len(slack.delivered) == 2  # fired and escalated; Slack hears no acknowledgement

    clock.advance(30 * MINUTE_MS)  # the failures leave the 30-minute window
    ended(svc, "org-a", 30, 0, clock.now_ms() - MINUTE_MS)
    evaluate()  # one clear evaluation: still open
    [still] = open_alerts(svc)
    assert (still.state.value, still.last_evaluation) == ("acknowledged", "clear")
    ended(svc, "org-a", 30, 0, clock.now_ms() - MINUTE_MS)
    evaluate()  # the second: resolved
    assert open_alerts(svc) == []
    assert notifications(webhook)[-1] == "alert.resolved"
    detail = svc.alerts.get(STAFF, alert.alert_id)
    assert [t["kind"] for t in detail.transitions] == ["fired", "escalated", "acknowledged", "resolved"]
    assert {(d["channel"], d["status"]) for d in detail.deliveries} == {
        ("alert_webhook", "delivered"),
        ("alert_slack", "delivered"),
    }
    assert len(detail.deliveries) == 4 + 3

    ended(svc, "org-a", 0, 25, clock.now_ms() - MINUTE_MS)
    evaluate()
    [again] = open_alerts(svc, scope="org-a")
    assert again.alert_id != alert.alert_id


def test_webhook_bodies_carry_the_alert_and_slack_a_line(
    svc: Services, channels: dict[str, RecordingTransport]
) -> None:
    ended(svc, "org-a", 10, 10, NOW_MS - MINUTE_MS)
    svc.alerts.evaluate(STAFF)
    svc.dispatcher.flush()
    hooks = [orjson.loads(d.body) for d in channels["alert_webhook"].delivered]
    [body] = [b for b in hooks if b["alert"].get("organization_id") == "org-a"]
    assert body["type"] == "alert.fired"
    assert body["alert"]["rule"] == "failure_rate"
    assert body["alert"]["organization_id"] == "org-a"
    assert body["alert"]["value"] == 0.5
    texts = sorted(orjson.loads(d.body)["text"] for d in channels["alert_slack"].delivered)
    assert len(texts) == 2  # org-a and the platform
    text = texts[0]
    assert text.startswith("[FIRING] [critical] failure_rate (org-a): ")
    assert "Failure rate 50 % over the last 30 min (threshold 25 %), 20 ended artifacts" in text


def test_an_undeliverable_notification_is_recorded_on_its_alert(settings: Settings, clock: FakeClock) -> None:
    down = RecordingTransport(error="receiver answered 500")
    s = Services(
        settings.model_copy(update={"retry_delivery_max_attempts": 2}),
        clock,
        alert_transports={"alert_webhook": down},
    )
    s.start()
    try:
        ended(s, "org-a", 0, 20, NOW_MS - MINUTE_MS)
        s.alerts.evaluate(STAFF)
        for _ in range(5):
            s.dispatcher.flush()
            clock.advance(10 * 60_000)
        [alert] = open_alerts(s, scope="org-a")
        [delivery] = s.alerts.get(STAFF, alert.alert_id).deliveries
        assert (delivery["status"], delivery["attempts"]) == ("undeliverable", 2)
        assert "receiver answered 500" in delivery["error"]
    finally:
        s.stop()


def test_acknowledgement_refusals_leave_no_trace(svc: Services) -> None:
    ended(svc, "org-a", 0, 20, NOW_MS - MINUTE_MS)
    svc.alerts.evaluate(STAFF)
    [alert] = open_alerts(svc, scope="org-a")
    with pytest.raises(ForbiddenError):
        svc.alerts.acknowledge(VIEWER_A, alert.alert_id, "mine")
    with pytest.raises(NotFoundError):
        svc.alerts.acknowledge(STAFF, "no-such-alert", None)
    svc.alerts.acknowledge(STAFF, alert.alert_id, None)
    before = svc.alerts.get(STAFF, alert.alert_id)
    with pytest.raises(ConflictError) as refused:
        svc.alerts.acknowledge(STAFF, alert.alert_id, "again")
    assert refused.value.code == "alert_acknowledged"
    after = svc.alerts.get(STAFF, alert.alert_id)
    assert after.transitions == before.transitions
    assert (after.alert.ack_note, after.alert.acknowledged_ms) == (None, before.alert.acknowledged_ms)


def test_rule_changes_are_checked_recorded_and_applied(svc: Services) -> None:
    with pytest.raises(ValidationError) as bad:
        svc.alerts.update_rule(STAFF, "failure_rate", {"min_volume": -1})
    assert bad.value.field == "min_volume"
    with pytest.raises(ValidationError) as unordered:
        svc.alerts.update_rule(
            STAFF,
            "failure_rate",
            {"levels": [{"severity": "high", "threshold": 0.3}, {"severity": "critical", "threshold": 0.2}]},
        )
    assert unordered.value.field == "levels"
    with pytest.raises(ForbiddenError):
        svc.alerts.update_rule(VIEWER_A, "failure_rate", {"min_volume": 5})
    with pytest.raises(NotFoundError):
        svc.alerts.update_rule(STAFF, "no_such_rule", {})

    view = svc.alerts.update_rule(STAFF, "failure_rate", {"min_volume": 5})
    assert (view.config.min_volume, view.updated_by) == (5, "staff")
    ended(svc, "org-a", 0, 5, NOW_MS - MINUTE_MS)  # enough now
    svc.alerts.evaluate(STAFF)
    [alert] = open_alerts(svc, scope="org-a")
    with svc.db.read() as conn:
        [change] = alert_store.rule_changes(conn, "failure_rate", 10)
    assert orjson.loads(change["before"])["min_volume"] == 20
    assert orjson.loads(change["after"])["min_volume"] == 5

    svc.alerts.update_rule(STAFF, "failure_rate", {"enabled": False})
    svc.alerts.evaluate(STAFF)
    assert open_alerts(svc) == []
    assert [t["note"] for t in svc.alerts.get(STAFF, alert.alert_id).transitions][-1] == "rule disabled"


def test_an_empty_system_is_never_inactive(svc: Services) -> None:
    summary = svc.alerts.evaluate(STAFF)
    assert summary["fired"] == 0
    assert svc.alerts.list_alerts(STAFF).items == []


def test_the_statement_count_does_not_grow_with_organizations(
    services: Services, sql_counter: StatementCounter
) -> None:
    def count_one_evaluation() -> int:
        """The statements of an evaluation that changes nothing but the alerts' last evaluation (the one
        before fired them), so both counts are of the same work."""
        services.alerts.evaluate(STAFF)
        with sql_counter:
            services.alerts.evaluate(STAFF)
        return sql_counter.count

    # 25 completed each: enough end-to-end samples for a latency baseline read in both counts (the
    # platform's; each organization's alone has enough too).
    for org in ("org-0", "org-1", "org-2"):
        ended(services, org, 25, 20, NOW_MS - MINUTE_MS)
    few = count_one_evaluation()
    for i in range(3, 40):
        ended(services, f"org-{i}", 25, 20, NOW_MS - MINUTE_MS)
    many = count_one_evaluation()
    assert len(open_alerts(services)) == 41  # 40 organizations and the platform
    assert many == few, (few, many)


def test_evaluations_that_race_leave_one_open_alert_per_fingerprint(svc: Services) -> None:
    ended(svc, "org-a", 0, 20, NOW_MS - MINUTE_MS)
    ended(svc, "org-b", 0, 20, NOW_MS - MINUTE_MS)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            svc.alerts.evaluate(STAFF)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    alerts = [a for a, _ in svc.alerts.list_alerts(STAFF).items if a.rule == "failure_rate"]
    assert sorted(a.scope for a in alerts) == ["", "org-a", "org-b"]


def test_stuck_artifacts_count_for_their_organization_and_the_platform(svc: Services) -> None:
    svc.ingest_blocking(
        [
            ev("artifact_received", "slow-a", NOW_MS - 10 * MINUTE_MS, organization_id="org-a"),
            ev("artifact_received", "slow-none", NOW_MS - 10 * MINUTE_MS),
            ev("artifact_received", "fresh-b", NOW_MS - MINUTE_MS, organization_id="org-b"),
        ],
        STAFF,
    )
    svc.alerts.evaluate(STAFF)
    stuck = {a.scope: a for a in open_alerts(svc, rule="stuck_artifacts")}
    assert set(stuck) == {"", "org-a"}
    assert stuck[""].value == 2  # org-a's and the one without an organization
    assert stuck["org-a"].message == "1 stuck artifacts (more than 0), org org-a"


def test_resolved_alerts_go_after_retention_with_their_history_and_open_ones_stay(
    svc: Services, clock: FakeClock, settings: Settings
) -> None:
    """SPEC 14: history kept 90 days after resolution; an open alert is kept however old it is."""
    ended(svc, "org-a", 0, 20, NOW_MS - MINUTE_MS)
    svc.alerts.evaluate(STAFF)
    svc.dispatcher.flush()
    [resolving] = open_alerts(svc, scope="org-a")
    [staying] = open_alerts(svc, scope="")
    # org-a alone recovers; the platform keeps failing through the same traffic the test adds.
    for _ in range(2):
        clock.advance(31 * MINUTE_MS)
        ended(svc, "org-a", 30, 0, clock.now_ms() - MINUTE_MS)
        ended(svc, None, 0, 40, clock.now_ms() - MINUTE_MS)
        svc.alerts.evaluate(STAFF)
    svc.dispatcher.flush()
    gone = svc.alerts.get(STAFF, resolving.alert_id)
    assert gone.alert.state.value == "resolved"
    assert gone.transitions
    assert gone.deliveries
    assert gone.alert.resolved_ms is not None
    resolved_ms = gone.alert.resolved_ms
    retention_ms = settings.alert_retention_d * 86_400_000

    def cleanup_at(now_ms: int) -> dict[str, int]:
        clock.set(now_ms)
        return Retention(svc.db, clock, settings).cleanup_events()

    kept = cleanup_at(resolved_ms + retention_ms)  # exactly at the cutoff: kept
    assert kept["alerts_deleted"] == 0
    assert svc.alerts.get(STAFF, resolving.alert_id).alert.alert_id == resolving.alert_id
    deleted = cleanup_at(resolved_ms + retention_ms + 1)
    assert deleted["alerts_deleted"] == 1
    assert deleted["alert_transitions_deleted"] == len(gone.transitions)
    assert deleted["alert_deliveries_deleted"] == len(gone.deliveries)
    with pytest.raises(NotFoundError):
        svc.alerts.get(STAFF, resolving.alert_id)
    still = svc.alerts.get(STAFF, staying.alert_id)
    assert still.alert.state.value == "firing"
    assert still.transitions


def test_a_stage_slower_than_its_week_fires_where_there_are_enough_samples(svc: Services) -> None:
    """stage_latency end to end: 7 days of hourly rows (transcription p95 about 500 ms) for two
    organizations, then a slow last hour; only the one with 20 samples now is judged."""

    def usual_hour() -> SnapshotParts:
        p = SnapshotParts()
        p.stages[Stage.TRANSCRIPTION].completed = 30
        p.stages[Stage.TRANSCRIPTION].latency.add_many_us([400_000 + 3_000 * i for i in range(30)])
        return p

    hour = floor_to(NOW_MS, HOUR_MS)
    with svc.db.write() as conn:
        for h in range(1, 7 * 24 + 1):
            rows = {"org-slow": usual_hour(), "org-few": usual_hour(), "": usual_hour()}
            snapshot_store.replace_period(conn, "hourly", hour - h * HOUR_MS, rows, NOW_MS, 0)
    batch = []
    for org, n in (("org-slow", 25), ("org-few", 10)):
        for i in range(n):
            aid = f"lat-{org}-{i}"
            at = NOW_MS - 20 * MINUTE_MS + i * 1000
            batch += [
                ev("artifact_received", aid, at - 5000, organization_id=org),
                ev("transcription_started", aid, at - 3000, organization_id=org),
                ev("transcription_completed", aid, at, organization_id=org, duration_ms=3000),
            ]
    svc.ingest_blocking(batch, STAFF)
    svc.alerts.evaluate(STAFF)
    fired = {(a.scope, a.stage) for a in open_alerts(svc, rule="stage_latency")}
    assert ("org-slow", "transcription") in fired
    assert ("org-few", "transcription") not in fired  # 10 samples: below the minimum volume
    [slow] = [a for a in open_alerts(svc, rule="stage_latency") if a.scope == "org-slow"]
    assert slow.value > 2
    assert "7-day p95" in slow.message
