"""Live hours read from stored minute rows (decision 0025) give exactly what their raw events give,
whatever arrived late, whichever minutes were built, and however old the version rows are."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from tests.conftest import NOW_MS, STAFF, Api, FreshServices
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain.periods import MINUTELY, Period, plan_minutes
from voicemon.domain.snapshot import render_parts
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.service import Services
from voicemon.service.aggregate import Aggregator, live_parts, parts_from_events
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.snapshots import ALL_SCOPES
from voicemon.storage.tables import period_versions

THIS_HOUR = floor_to(NOW_MS, HOUR_MS)  # 02:00
PREVIOUS_HOUR = THIS_HOUR - HOUR_MS
NOW = NOW_MS + 30_000  # 02:40:30: the minute in progress has events before now
IN_PROGRESS = floor_to(NOW, MINUTE_MS)
ORGS = ("org-a", "org-b")


def _events(minute: int, org: str, n: int, tag: str) -> list[dict[str, Any]]:
    """A small artifact life in one minute: received, a transcription with a duration and a cost, and
    completed or failed, so counts, sums, stage sketches and end to end all take part."""
    out = []
    for i in range(n):
        aid = f"{tag}-{org}-{minute}-{i}"
        ts = minute + i * 997 % MINUTE_MS
        out += [
            ev("artifact_received", aid, ts, organization_id=org),
            ev("transcription_started", aid, ts + 1, organization_id=org),
            ev(
                "transcription_completed",
                aid,
                ts + 2,
                organization_id=org,
                duration_ms=100 + 37 * i,
                cost_usd=0.001 * (i + 1),
            ),
            ev("artifact_completed" if i % 3 else "artifact_failed", aid, ts + 3, organization_id=org),
        ]
    return out


def _assert_live_equals_raw(svc: Services) -> None:
    with svc.db.read() as conn, conn.begin():
        for start in (PREVIOUS_HOUR, THIS_HOUR):
            end = min(start + HOUR_MS, NOW + 1)
            want = {s: render_parts(p) for s, p in parts_from_events(conn, start, end, ALL_SCOPES).items()}
            got = {s: render_parts(p) for s, p in live_parts(conn, start, end, ALL_SCOPES).items()}
            assert got == want, format_time(start)
            for scope in ("", *ORGS):
                one = live_parts(conn, start, end, scope).get(scope)
                assert (render_parts(one) if one else None) == want.get(scope), (format_time(start), scope)


minutes = st.integers(0, 100).map(lambda n: PREVIOUS_HOUR + n * MINUTE_MS)  # up to the minute in progress
steps = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), minutes, st.sampled_from(ORGS), st.integers(1, 3)),
        st.tuples(st.just("build")),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=steps)
def test_live_hours_from_minute_rows_equal_their_raw_events(
    fresh_services: FreshServices, steps: list[tuple[Any, ...]]
) -> None:
    with fresh_services() as svc:
        assert isinstance(svc.clock, FakeClock)
        svc.clock.set(NOW)
        agg = Aggregator(svc.db, svc.clock, svc.settings)
        for n, step in enumerate(steps):
            if step[0] == "ingest":
                _, minute, org, count = step
                # A minute already built receives more: its row is marked and must not be read.
                svc.ingest_blocking(_events(minute, org, count, f"s{n}"), STAFF)
            else:
                agg.minutes_catch_up()
        _assert_live_equals_raw(svc)
        summary = svc.metrics.summary(STAFF, svc.metrics.resolve_range(Period.HOURLY, None, None), None)
        with svc.db.read() as conn:
            raw = parts_from_events(conn, PREVIOUS_HOUR, NOW + 1, "")[""]
        assert render_parts(summary.parts) == render_parts(raw)


def _raw_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the ranges of every raw-event read."""
    seen: list[tuple[int, int]] = []
    real = snapshot_store.raw_groups

    def recording(conn: Any, start_ms: int, end_ms: int, scope: Any = ALL_SCOPES, **options: Any) -> Any:
        seen.append((start_ms, end_ms))
        return real(conn, start_ms, end_ms, scope, **options)

    monkeypatch.setattr(snapshot_store, "raw_groups", recording)
    return seen


def test_after_the_minutes_job_only_the_minute_in_progress_is_read_raw(
    api: Api, services: Services, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(NOW)
    for minute in (PREVIOUS_HOUR + 5 * MINUTE_MS, THIS_HOUR + MINUTE_MS, THIS_HOUR + 39 * MINUTE_MS):
        services.ingest_blocking(_events(minute, "org-a", 2, "x"), STAFF)
    services.ingest_blocking(_events(IN_PROGRESS, "org-b", 1, "now"), STAFF)
    before = api.call("GET", "/v1/metrics/summary").json()

    run = api.call("POST", "/v1/jobs/aggregate-minutes/runs")
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "succeeded", run.text
    assert run.json()["summary"]["minutes_computed"] == 3

    seen = _raw_reads(monkeypatch)
    after = api.call("GET", "/v1/metrics/summary").json()
    assert seen == [(IN_PROGRESS, NOW + 1)]
    assert {k: v for k, v in after.items() if k != "computed_at"} == {
        k: v for k, v in before.items() if k != "computed_at"
    }
    assert after["artifacts_received"] == 7

    seen.clear()
    current = api.call("GET", "/v1/metrics/current").json()
    assert seen == [(IN_PROGRESS, NOW + 1)]
    assert current["artifacts_received"] == 5


def test_a_range_with_live_hours_is_three_statements_however_many_hours_are_live(
    api: Api, services: Services, clock: FakeClock
) -> None:
    """Versions, stored rows with minute rows, the minute in progress: never a read per live hour."""
    clock.set(NOW)
    for minute in (PREVIOUS_HOUR + 5 * MINUTE_MS, THIS_HOUR + MINUTE_MS):
        services.ingest_blocking(_events(minute, "org-a", 2, "x"), STAFF)
    services.ingest_blocking(_events(IN_PROGRESS, "org-b", 1, "now"), STAFF)
    assert api.call("POST", "/v1/jobs/aggregate-minutes/runs").json()["status"] == "succeeded"
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    last_day = services.metrics.resolve_range(Period.HOURLY, None, None)
    event.listen(services.db.engine, "before_cursor_execute", count)
    try:
        merged = services.metrics.summary(STAFF, last_day, None)
    finally:
        event.remove(services.db.engine, "before_cursor_execute", count)
    statements = [s for s in statements if s.split()[0] == "SELECT"]
    # No hourly run yet: the three newest hours are live (00:00 empty, 01:00 and 02:00 from minute rows).
    assert len(merged.plan.live) == 3, merged.plan
    assert merged.parts.received == 5
    assert len(statements) == 3, statements
    assert api.call("GET", "/v1/metrics/summary").json()["artifacts_received"] == 5


def test_a_late_event_in_a_built_minute_is_read_raw_until_the_next_run(
    api: Api, services: Services, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(NOW)
    minute = THIS_HOUR + 10 * MINUTE_MS
    services.ingest_blocking(_events(minute, "org-a", 2, "first"), STAFF)
    assert api.call("POST", "/v1/jobs/aggregate-minutes/runs").json()["summary"]["minutes_computed"] == 1
    services.ingest_blocking(_events(minute, "org-a", 1, "late"), STAFF)

    seen = _raw_reads(monkeypatch)
    assert api.call("GET", "/v1/metrics/current").json()["artifacts_received"] == 3
    assert seen == [(minute, minute + MINUTE_MS)]

    assert api.call("POST", "/v1/jobs/aggregate-minutes/runs").json()["summary"]["minutes_computed"] == 1
    seen.clear()
    assert api.call("GET", "/v1/metrics/current").json()["artifacts_received"] == 3
    assert seen == []


def test_events_without_minute_versions_make_the_hour_read_raw(
    api: Api, services: Services, clock: FakeClock
) -> None:
    """As after an upgrade from a version that did not track minutes: the hour's version no longer equals
    the sum of its minutes', so the minute rows cannot be trusted to hold everything."""
    clock.set(NOW)
    services.ingest_blocking(_events(THIS_HOUR + 2 * MINUTE_MS, "org-a", 2, "a"), STAFF)
    api.call("POST", "/v1/jobs/aggregate-minutes/runs")
    services.ingest_blocking(_events(THIS_HOUR + 3 * MINUTE_MS, "org-b", 1, "b"), STAFF)
    with services.db.write() as conn:
        conn.execute(
            period_versions.delete().where(
                period_versions.c.period_type == MINUTELY,
                period_versions.c.period_start_ms == THIS_HOUR + 3 * MINUTE_MS,
            )
        )
    with services.db.read() as conn, conn.begin():
        cover = plan_minutes(
            THIS_HOUR,
            NOW + 1,
            snapshot_store.version_of(conn, "hourly", THIS_HOUR),
            snapshot_store.versions(conn, MINUTELY, THIS_HOUR, THIS_HOUR + HOUR_MS),
        )
    assert cover.raw_runs == ((THIS_HOUR, NOW + 1),)
    assert api.call("GET", "/v1/metrics/current").json()["artifacts_received"] == 3


def test_the_minutes_job_skips_aggregated_hours_and_prunes_what_is_past_the_live_window(
    api: Api, services: Services, clock: FakeClock
) -> None:
    clock.set(NOW)
    old = THIS_HOUR - 3 * HOUR_MS  # before the three hours that may be answered live
    services.ingest_blocking(_events(old + MINUTE_MS, "org-a", 1, "old"), STAFF)
    services.ingest_blocking(_events(PREVIOUS_HOUR + MINUTE_MS, "org-a", 1, "prev"), STAFF)
    services.ingest_blocking(_events(THIS_HOUR + MINUTE_MS, "org-a", 1, "now"), STAFF)
    hourly = api.call(
        "POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(PREVIOUS_HOUR)}
    ).json()
    assert hourly["status"] == "succeeded", hourly

    summary = api.call("POST", "/v1/jobs/aggregate-minutes/runs").json()["summary"]
    # The previous hour is aggregated now: only the hour in progress is answered live.
    assert summary["minutes_computed"] == 1
    assert summary["from"] == format_time(THIS_HOUR)
    assert summary["minute_versions_deleted"] == 1  # the old minute's, from ingestion
    with services.db.read() as conn:
        kept = snapshot_store.versions(conn, MINUTELY, 0, NOW_MS + HOUR_MS)
    assert sorted(kept) == [PREVIOUS_HOUR + MINUTE_MS, THIS_HOUR + MINUTE_MS]
    assert api.call("GET", "/v1/metrics/current").json()["artifacts_received"] == 1
