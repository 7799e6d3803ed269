"""Scheduled jobs (SPEC 8, 19): definitions, the once-per-tick runner with a lane per job and leases that
renew while a run lives, and the scheduler thread."""

from __future__ import annotations

from collections.abc import Callable

from voicemon.domain.access import SYSTEM
from voicemon.domain.periods import Period, period_start
from voicemon.domain.timeutil import format_time
from voicemon.jobs.runner import JobDefinition, JobOverview, JobRunner
from voicemon.jobs.scheduler import Scheduler
from voicemon.service import Services
from voicemon.service.aggregate import Aggregator
from voicemon.service.partitions import EventPartitions
from voicemon.service.retention import Retention

__all__ = ["JobDefinition", "JobOverview", "JobRunner", "Scheduler", "build_runner"]


def build_runner(services: Services) -> JobRunner:
    """The jobs of SPEC 8, 14 and 19, and the minutes job that keeps live hours cheap (decision 0025), wired
    to the service layer."""
    s = services.settings
    agg = Aggregator(services.db, services.clock, s)
    retention = Retention(services.db, services.clock, s)
    partitions = EventPartitions(services.db, services.clock, s)

    def hourly(target_ms: int | None) -> dict[str, object]:
        if target_ms is None:
            return agg.hourly_catch_up()
        hour = period_start(Period.HOURLY, target_ms)
        rows = agg.aggregate_hour(hour)
        days = agg.redo_days_of([hour], services.clock.now_ms())
        return {
            "aggregated": [format_time(hour)],
            "rows": rows,
            "days_redone": [format_time(d) for d in days],
        }

    def daily(target_ms: int | None) -> dict[str, object]:
        if target_ms is None:
            return agg.daily_catch_up()
        return agg.aggregate_day(target_ms)

    def check(period: Period) -> Callable[[int], None]:
        def _check(target_ms: int) -> None:
            agg.ensure_target(period, period_start(period, target_ms), services.clock.now_ms())

        return _check

    def minutes(_: int | None) -> dict[str, object]:
        summary = agg.minutes_catch_up()
        cutoff = agg.oldest_minute_ms(services.clock.now_ms())
        return {**summary, **retention.cleanup_minutes(cutoff)}

    jobs = [
        JobDefinition("aggregate-hourly", s.schedule_aggregate_hourly, hourly, check(Period.HOURLY)),
        JobDefinition("aggregate-daily", s.schedule_aggregate_daily, daily, check(Period.DAILY)),
        JobDefinition(
            "cleanup-snapshots", s.schedule_cleanup_snapshots, lambda _: retention.cleanup_snapshots()
        ),
        JobDefinition("cleanup-events", s.schedule_cleanup_events, lambda _: retention.cleanup_events()),
        JobDefinition(
            "evaluate-alerts", s.schedule_evaluate_alerts, lambda _: services.alerts.evaluate(SYSTEM)
        ),
        JobDefinition("aggregate-minutes", s.schedule_aggregate_minutes, minutes),
        JobDefinition("partition-events", s.schedule_partition_events, lambda _: partitions.ensure()),
    ]
    return JobRunner(
        services.db,
        services.clock,
        s,
        jobs,
        observe=lambda job, status: services.telemetry.job_runs.labels(job, status).inc(),
    )
