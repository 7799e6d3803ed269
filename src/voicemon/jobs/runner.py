"""Running jobs: by hand (to the end, in the caller's thread) or on schedule (each tick once).

Scheduled ticks live in the ``job_runs`` table. Every scheduler inserts the latest due tick of each job
with a unique (name, trigger, scheduled_for) key; only one insert succeeds, and the pending run is then
claimed by exactly one worker. A worker that dies leaves a run whose lease expires; the next tick records
it as failed and the following scheduled run catches up. Targets are computed when a job runs, from the
clock, never when it is scheduled.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from voicemon.clock import Clock
from voicemon.errors import NotFoundError, ValidationError
from voicemon.jobs.schedule import next_fire, previous_fire, validate
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import jobs as job_store
from voicemon.storage.jobs import RunRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """``run(target_ms)`` does the work and returns a summary; ``check(target_ms)`` refuses a bad target
    before anything is recorded. A job without ``check`` takes no target."""

    name: str
    schedule: str
    run: Callable[[int | None], Mapping[str, Any]]
    check: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True)
class JobOverview:
    job: JobDefinition
    next_run_ms: int
    last_run: RunRecord | None


class JobRunner:
    def __init__(self, db: Database, clock: Clock, settings: Settings, jobs: list[JobDefinition]) -> None:
        self._db = db
        self._clock = clock
        self._lease_ms = settings.job_lease_s * 1000
        self.jobs = {j.name: JobDefinition(j.name, validate(j.schedule), j.run, j.check) for j in jobs}
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"

    def job(self, name: str) -> JobDefinition:
        found = self.jobs.get(name)
        if found is None:
            raise NotFoundError(f"no job named {name!r}; jobs: {', '.join(self.jobs)}", code="job_not_found")
        return found

    def run_now(self, name: str, target_ms: int | None = None) -> RunRecord:
        """Run a job by hand, to its end; the returned record says how it went."""
        job = self.job(name)
        if target_ms is not None:
            if job.check is None:
                raise ValidationError(f"{name} takes no target", code="no_target", field="target")
            job.check(target_ms)
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            record = job_store.insert_running(
                conn, uuid.uuid4().hex, name, now_ms, target_ms, self.owner, now_ms + self._lease_ms
            )
        return self._execute(record, job)

    def tick(self) -> list[RunRecord]:
        """One scheduler step: reap crashed runs, insert due ticks, run whatever this worker can claim."""
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            reaped = job_store.reap_expired(conn, now_ms)
            for job in self.jobs.values():
                job_store.insert_tick(conn, uuid.uuid4().hex, job.name, previous_fire(job.schedule, now_ms))
        if reaped:
            logger.warning("crashed runs reaped", extra={"action": "runs_reaped", "count": reaped})
        finished: list[RunRecord] = []
        while True:
            now_ms = self._clock.now_ms()
            with self._db.write() as conn:
                claimed = job_store.claim_next(conn, self.owner, now_ms, now_ms + self._lease_ms)
            if claimed is None:
                return finished
            definition = self.jobs.get(claimed.name)
            if definition is None:
                finished.append(
                    self._finish(claimed, job_store.FAILED, None, f"unknown job {claimed.name!r}")
                )
                continue
            finished.append(self._execute(claimed, definition))

    def _execute(self, record: RunRecord, job: JobDefinition) -> RunRecord:
        logger.info("job started", extra={"action": "job_started", "job": job.name, "run_id": record.run_id})
        try:
            summary = job.run(record.target_ms)
        except Exception as exc:
            # Logged and recorded, never retried here: the next scheduled run catches up.
            logger.exception(
                "job failed", extra={"action": "job_failed", "job": job.name, "run_id": record.run_id}
            )
            return self._finish(record, job_store.FAILED, None, f"{exc.__class__.__name__}: {exc}")
        logger.info(
            "job finished", extra={"action": "job_finished", "job": job.name, "run_id": record.run_id}
        )
        return self._finish(record, job_store.SUCCEEDED, orjson.dumps(summary).decode(), None)

    def _finish(self, record: RunRecord, status: str, summary: str | None, error: str | None) -> RunRecord:
        with self._db.write() as conn:
            return job_store.finish(conn, record.run_id, status, self._clock.now_ms(), summary, error)

    def overview(self) -> list[JobOverview]:
        now_ms = self._clock.now_ms()
        with self._db.read() as conn:
            last = job_store.last_runs(conn, list(self.jobs))
        return [JobOverview(j, next_fire(j.schedule, now_ms), last.get(j.name)) for j in self.jobs.values()]

    def runs(self, name: str | None, limit: int) -> list[RunRecord]:
        if name is not None:
            self.job(name)
        with self._db.read() as conn:
            return job_store.list_runs(conn, name, limit)
