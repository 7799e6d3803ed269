"""Scheduled jobs and retention (SPEC 6.3, 8): catch-up after downtime, targets from the clock at run
time, each tick once across schedulers, failures recorded, and strict, batched retention cutoffs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import Table, func, select

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.access import SYSTEM, Principal, Role
from voicemon.domain.periods import Period, complete_periods
from voicemon.domain.records import RunRecord
from voicemon.domain.schedule import previous_fire
from voicemon.domain.snapshot import SnapshotParts
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.errors import ConflictError, ForbiddenError
from voicemon.jobs import JobDefinition, JobRunner, build_runner
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import jobs as job_store
from voicemon.storage import snapshots as snapshot_store
from voicemon.storage.tables import artifacts, events, job_runs, minute_counters, snapshots

WEEK_MS = 7 * DAY_MS


def _summary(record: RunRecord) -> dict[str, Any]:
    assert record.status == "succeeded", record.error
    assert record.summary is not None
    return orjson.loads(record.summary)  # type: ignore[no-any-return]


def _platform_rows(services: Services, period: str, start: int, end: int) -> dict[int, int]:
    """Period start -> artifacts received, of the platform-wide rows starting in ``[start, end)``."""
    with services.db.read() as conn:
        rows = snapshot_store.load_rows(conn, period, start, end, "")
    return {r.period_start_ms: r.parts.received for r in rows}


def _all_runs(services: Services) -> list[RunRecord]:
    with services.db.read() as conn:
        return job_store.list_runs(conn, None, 100_000)


def _tick(services: Services, runner: JobRunner) -> dict[str, RunRecord]:
    """One tick, waited to its end: job name -> the final record of each run it started."""
    started = runner.tick()
    assert runner.flush(120)
    with services.db.read() as conn:
        return {r.name: job_store.get_run(conn, r.run_id) for r in started}


# --- downtime --------------------------------------------------------------------------------------------


def test_one_run_after_downtime_catches_up_everything_inside_retention(
    api: Api, services: Services, clock: FakeClock
) -> None:
    first = floor_to(NOW_MS, DAY_MS) - DAY_MS + 2 * HOUR_MS + 10 * MINUTE_MS  # yesterday 02:10
    expected: Counter[int] = Counter()
    for k in range(30):  # the pipeline keeps sending for 30 hours; nothing is aggregated meanwhile
        hour = floor_to(first, HOUR_MS) + k * HOUR_MS
        times = [hour + 10 * MINUTE_MS + i * MINUTE_MS for i in range(k % 4 + 1)]
        clock.set(times[-1] + MINUTE_MS)
        batch = [
            ev("artifact_received", f"d{k}-{i}", t, organization_id="org-a") for i, t in enumerate(times)
        ]
        assert services.ingest_blocking(batch, STAFF).accepted == len(batch)
        expected[hour] += len(batch)
    now = first + 30 * HOUR_MS
    clock.set(now)
    current_hour, current_day = floor_to(now, HOUR_MS), floor_to(now, DAY_MS)
    services.ingest_blocking([ev("artifact_received", "in-current-hour", current_hour + MINUTE_MS)], STAFF)
    runner = build_runner(services)

    summary = _summary(runner.run_now(STAFF, "aggregate-hourly"))
    hours = complete_periods(Period.HOURLY, now - services.settings.event_retention_ms, now)
    assert len(hours) == 47
    assert summary["aggregated"] == [format_time(h) for h in hours]
    rows = _platform_rows(services, "hourly", 0, 2 * now)
    assert rows == {h: expected[h] for h in hours}  # zeros before the traffic, nothing for this hour
    assert current_hour not in rows

    # The hourly run rolled up the complete days of the hours it did; the daily run does the rest.
    redone = [format_time(d) for d in sorted({floor_to(h, DAY_MS) for h in hours}) if d + DAY_MS <= now]
    assert summary["days_redone"] == redone
    summary = _summary(runner.run_now(STAFF, "aggregate-daily"))
    days = complete_periods(Period.DAILY, now - services.settings.hourly_retention_ms, now)
    assert len(days) == 6
    assert summary["aggregated"] == [format_time(d) for d in days if format_time(d) not in redone]
    assert summary["hours_redone"] == 0
    daily = _platform_rows(services, "daily", 0, 2 * now)
    assert daily == {d: sum(n for h, n in expected.items() if floor_to(h, DAY_MS) == d) for d in days}
    assert daily[floor_to(first, DAY_MS)] > 0
    assert current_day not in daily

    # The current hour and day are refused before anything is recorded, in the service and over HTTP.
    recorded = len(_all_runs(services))
    for name in ("aggregate-hourly", "aggregate-daily"):
        with pytest.raises(ConflictError) as refused:
            runner.run_now(STAFF, name, now)
        assert refused.value.code == "period_incomplete"
        r = api.call("POST", f"/v1/jobs/{name}/runs", json={"target": format_time(current_hour + 1)})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "period_incomplete"
    assert len(_all_runs(services)) == recorded
    assert current_hour not in _platform_rows(services, "hourly", 0, 2 * now)
    assert current_day not in _platform_rows(services, "daily", 0, 2 * now)


# --- targets at run time --------------------------------------------------------------------------------


def test_the_target_comes_from_the_clock_when_the_job_runs(services: Services, clock: FakeClock) -> None:
    t0 = floor_to(NOW_MS, HOUR_MS)
    clock.set(t0)
    runner = build_runner(services)  # "deployed" at T0
    late_hour = t0 + 2 * HOUR_MS  # the hour ending at T0 + 3h
    clock.set(late_hour + HOUR_MS)
    batch = [ev("artifact_received", f"r{i}", late_hour + i * MINUTE_MS) for i in range(5)]
    assert services.ingest_blocking(batch, STAFF).accepted == 5
    clock.set(t0 + 3 * HOUR_MS + 30 * MINUTE_MS)

    done = _tick(services, runner)
    hourly = done["aggregate-hourly"]
    assert hourly.scheduled_for_ms == t0 + 3 * HOUR_MS + 30 * MINUTE_MS
    assert format_time(late_hour) in _summary(hourly)["aggregated"]
    assert _platform_rows(services, "hourly", late_hour, late_hour + 1) == {late_hour: 5}
    assert runner.tick() == []  # that tick is done; nothing runs twice


# --- once per tick ----------------------------------------------------------------------------------------


def test_two_schedulers_run_each_tick_exactly_once(db_url: str, clock: FakeClock) -> None:
    settings = Settings(database_url=db_url, key_cache_s=0)
    pair = [Services(settings, clock), Services(settings, clock)]  # two engines, one database
    for svc in pair:
        svc.start()
    try:
        start = clock.now_ms()
        traffic = [
            ev("artifact_received", f"s{i}", start - i * 37 * MINUTE_MS, organization_id=f"org-{i % 3}")
            for i in range(60)
        ]
        pair[0].ingest_blocking(traffic, STAFF)
        runners = [build_runner(svc) for svc in pair]
        steps, step_ms = 288, 10 * MINUTE_MS  # 48 simulated hours
        barrier = threading.Barrier(3, timeout=120)
        errors: list[BaseException] = []

        def drive(runner: JobRunner) -> None:
            for _ in range(steps):
                barrier.wait()
                try:
                    runner.tick()
                    assert runner.flush(120), "runs still going"
                except BaseException as exc:
                    errors.append(exc)
                barrier.wait()

        threads = [threading.Thread(target=drive, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        due: set[tuple[str, int]] = set()
        for step in range(steps):
            now = start + step * step_ms
            clock.set(now)
            due |= {(j.name, previous_fire(j.schedule, now)) for j in runners[0].jobs.values()}
            barrier.wait()  # both tick at this time
            barrier.wait()  # both are done
        for t in threads:
            t.join()
        assert errors == []

        runs = _all_runs(pair[0])
        per_tick = Counter((r.name, r.scheduled_for_ms) for r in runs)
        assert set(per_tick) == due
        assert max(per_tick.values()) == 1
        assert {r.trigger for r in runs} == {"schedule"}
        failed = [(r.name, format_time(r.scheduled_for_ms), r.error) for r in runs if r.status != "succeeded"]
        assert failed == []
        assert Counter(name for name, _ in due) == {
            "aggregate-minutes": 288,  # every minute: once per step of 10 simulated minutes
            "aggregate-hourly": 49,  # :30 of the hour before the start, then every hour of 48
            "aggregate-daily": 3,
            "cleanup-snapshots": 1,  # weekly, last Sunday (the 48 hours start on a Monday)
            "cleanup-events": 1,
            "evaluate-alerts": 288,  # every 5 minutes: once per step of 10 simulated minutes
            "partition-events": 49,  # :15 of the hour before the start, then every hour of 48
        }
    finally:
        for svc in pair:
            svc.stop()


# --- failures ---------------------------------------------------------------------------------------------


def test_a_failing_job_is_recorded_and_the_scheduler_goes_on(services: Services, clock: FakeClock) -> None:
    calls: list[int | None] = []

    def boom(target_ms: int | None) -> dict[str, Any]:
        calls.append(target_ms)
        raise RuntimeError("the model endpoint is down")

    jobs = [
        JobDefinition("boom", "*/10 * * * *", boom),
        JobDefinition("fine", "*/10 * * * *", lambda _: {"ok": True}),
    ]
    runner = JobRunner(services.db, clock, services.settings, jobs)
    done = _tick(services, runner)
    assert done["boom"].status == "failed"
    assert done["boom"].error == "RuntimeError: the model endpoint is down"
    assert done["boom"].finished_ms == clock.now_ms()
    assert done["fine"].status == "succeeded"
    assert len(calls) == 1

    clock.advance(MINUTE_MS)
    assert runner.tick() == []  # not retried in a loop: the failed tick stays failed
    assert len(calls) == 1
    clock.advance(10 * MINUTE_MS)
    assert {name: r.status for name, r in _tick(services, runner).items()} == {
        "boom": "failed",
        "fine": "succeeded",
    }
    assert len(calls) == 2
    stored = [r for r in _all_runs(services) if r.name == "boom"]
    assert [r.status for r in stored] == ["failed", "failed"]
    assert all(r.error == "RuntimeError: the model endpoint is down" for r in stored)


def test_a_failed_run_shows_in_the_jobs_api(api: Api, services: Services) -> None:
    r = api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(NOW_MS - HOUR_MS)})
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded"
    runs = items_of(api.call("GET", "/v1/jobs/aggregate-hourly/runs"))
    assert [(x["trigger"], x["status"]) for x in runs] == [("manual", "succeeded")]
    last = {j["name"]: j["last_run"] for j in items_of(api.call("GET", "/v1/jobs"))}
    assert last["aggregate-hourly"]["run_id"] == r.json()["run_id"]


def test_the_runner_checks_its_caller(services: Services) -> None:
    ran: list[int | None] = []

    def fine(target_ms: int | None) -> dict[str, Any]:
        ran.append(target_ms)
        return {}

    runner = JobRunner(
        services.db, services.clock, services.settings, [JobDefinition("fine", "0 * * * *", fine)]
    )
    for role in (Role.VIEWER, Role.INGEST):
        caller = Principal(f"k-{role}", None, role)
        with pytest.raises(ForbiddenError):
            runner.run_now(caller, "fine")
        with pytest.raises(ForbiddenError):
            runner.run_now(caller, "no-such-job")  # refused before the name is looked up
        with pytest.raises(ForbiddenError):
            runner.overview(caller)
        with pytest.raises(ForbiddenError):
            runner.runs(caller, None, 10)
    assert ran == []
    assert _all_runs(services) == []
    # voicemon itself (scheduled ticks, the operator's CLI) is staff.
    assert runner.run_now(SYSTEM, "fine").status == "succeeded"
    assert ran == [None]
    assert [r.status for r in runner.runs(SYSTEM, "fine", 10)] == ["succeeded"]
    assert [o.job.name for o in runner.overview(SYSTEM)] == ["fine"]


# --- retention --------------------------------------------------------------------------------------------

KEPT = (0, 1, HOUR_MS)  # exactly at the cutoff, and younger
EXPIRED = (-1, -2, -3, -HOUR_MS, -2 * WEEK_MS, -5 * WEEK_MS, -365 * DAY_MS)  # 7 rows: 3 batches of 3


@pytest.fixture
def small_batches(db_url: str, clock: FakeClock) -> Iterator[Services]:
    svc = Services(Settings(database_url=db_url, key_cache_s=0, cleanup_batch_rows=3), clock)
    svc.start()
    yield svc
    svc.stop()


def _ages(services: Services, table: Table, column: str, **where: Any) -> list[int]:
    query = select(table.c[column]).where(*(table.c[k] == v for k, v in where.items()))
    with services.db.read() as conn:
        return sorted(int(v) for v in conn.scalars(query))


def _insert_expiring_rows(services: Services, now: int) -> dict[str, int]:
    s = services.settings
    cutoffs = {
        "events": now - 48 * HOUR_MS,
        "minute_counters": now - 2 * HOUR_MS,
        "artifacts": now - 90 * DAY_MS,
        "job_runs": now - 30 * DAY_MS,
        "hourly": now - 7 * DAY_MS,
        "daily": now - 90 * DAY_MS,
    }
    assert cutoffs["events"] == now - s.event_retention_ms
    ages = {kind: [c + d for d in (*KEPT, *EXPIRED)] for kind, c in cutoffs.items()}
    counters = dict.fromkeys((c.name for c in minute_counters.c if c.name not in ("scope", "minute_ms")), 0)
    with services.db.write() as conn:
        conn.execute(
            events.insert(),
            [
                {
                    "event_id": f"old-{t}",
                    "event_type": "artifact_received",
                    "artifact_id": f"a{t}",
                    "ts_ms": t,
                    "received_ms": t,
                    "cost_nusd": 0,
                }
                for t in ages["events"]
            ],
        )
        conn.execute(
            minute_counters.insert(),
            [{"scope": "", "minute_ms": t, **counters} for t in ages["minute_counters"]],
        )
        conn.execute(
            artifacts.insert(),
            [
                {
                    "owner": "",
                    "artifact_id": f"art-{t}",
                    "status": "completed",
                    "first_event_at_ms": t - DAY_MS,
                    "last_event_at_ms": t,
                    "listed_at_ms": t - DAY_MS,
                    "event_count": 1,
                    "retry_count": 0,
                    "total_cost_nusd": 0,
                    "stage_started": "{}",
                }
                for t in ages["artifacts"]
            ],
        )
        conn.execute(
            job_runs.insert(),
            [
                {
                    "run_id": f"run-{t}",
                    "name": "aggregate-hourly",
                    "trigger": "schedule",
                    "scheduled_for_ms": t,
                    "status": "succeeded",
                }
                for t in ages["job_runs"]
            ],
        )
        for period in ("hourly", "daily"):
            for t in ages[period]:
                parts = {"": SnapshotParts(received=1), "org-a": SnapshotParts(received=1)}
                snapshot_store.replace_period(conn, period, t, parts, now, 0)
        # Day blocks age by their first day, against the daily cutoff.
        for t in ages["daily"]:
            parts = {"": SnapshotParts(received=2), "org-a": SnapshotParts(received=2)}
            snapshot_store.replace_period(conn, "days4", t, parts, now, 0)
        # A daily row as old as the hourly cutoff is young for a daily row: kept.
        snapshot_store.replace_period(conn, "daily", cutoffs["hourly"] - 1, {"": SnapshotParts()}, now, 0)
    return cutoffs


def test_retention_cutoffs_are_strict_and_every_expired_row_goes(
    small_batches: Services, clock: FakeClock
) -> None:
    services = small_batches
    now = clock.now_ms()
    cutoffs = _insert_expiring_rows(services, now)
    runner = build_runner(services)
    kept = {kind: [c + d for d in KEPT] for kind, c in cutoffs.items()}

    summary = _summary(runner.run_now(STAFF, "cleanup-events"))
    assert summary["events_deleted"] == len(EXPIRED)
    assert summary["minute_counters_deleted"] == len(EXPIRED)
    assert summary["artifacts_deleted"] == len(EXPIRED)
    assert summary["job_runs_deleted"] == len(EXPIRED)
    assert _ages(services, events, "ts_ms") == kept["events"]
    assert _ages(services, minute_counters, "minute_ms") == kept["minute_counters"]
    assert _ages(services, artifacts, "last_event_at_ms") == kept["artifacts"]
    assert _ages(services, job_runs, "scheduled_for_ms", trigger="schedule") == kept["job_runs"]
    assert len(_all_runs(services)) == len(KEPT) + 1  # this run's own record is young

    summary = _summary(runner.run_now(STAFF, "cleanup-snapshots"))
    assert summary == {
        "hourly_deleted": 2 * len(EXPIRED),
        "daily_deleted": 2 * len(EXPIRED),
        "blocks_deleted": 2 * len(EXPIRED),
    }
    blocks = _ages(services, snapshots, "period_start_ms", period_type="days4", scope="org-a")
    assert blocks == kept["daily"]
    with services.db.read() as conn:
        versions = snapshot_store.versions(conn, "days4", 0, now)
    assert sorted(versions) == kept["daily"]
    for period in ("hourly", "daily"):
        starts = _ages(services, snapshots, "period_start_ms", period_type=period, scope="org-a")
        assert starts == kept[period], period
    young_daily = _ages(services, snapshots, "period_start_ms", period_type="daily", scope="")
    assert young_daily == sorted([cutoffs["hourly"] - 1, *kept["daily"]])

    # A second run finds nothing left to delete.
    again = _summary(runner.run_now(STAFF, "cleanup-events"))
    assert again["events_deleted"] == again["artifacts_deleted"] == again["job_runs_deleted"] == 0
    with services.db.read() as conn:
        assert conn.scalar(select(func.count()).select_from(events)) == len(KEPT)
