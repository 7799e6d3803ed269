"""Running jobs: by hand (to the end, in the caller's thread) or on schedule (each tick once).

Scheduled ticks live in the ``job_runs`` table. Every scheduler inserts the latest due tick of each job
with a unique (name, trigger, scheduled_for) key; only one insert succeeds, and the pending run is then
claimed by exactly one worker. Targets are computed when a job runs, from the clock, never when it is
scheduled.

Each job has one lane per worker: its claimed run goes on in a thread of its own, so a long cleanup never
holds up an aggregation that is due. A lane that is busy neither inserts nor claims its job's next tick;
once free, it inserts the latest due tick, whose run catches up on what the busy time left (as after
downtime).

A live run renews its lease (:class:`~voicemon.jobs.lease.Heartbeat`). A worker that dies stops renewing;
the next tick, on any worker, records the run as failed, and the following scheduled run catches up. A
run reaped while its worker was only stalled cannot be finished by it any more: the late finish is refused
and logged (``run_lost``), and the ``failed`` record stays.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from voicemon.clock import Clock
from voicemon.domain.access import STAFF_ONLY, Principal, require_role
from voicemon.domain.records import RunRecord
from voicemon.domain.schedule import next_fire, previous_fire, validate
from voicemon.errors import NotFoundError, ValidationError
from voicemon.jobs.lease import Heartbeat
from voicemon.settings import Settings
from voicemon.storage import Database
from voicemon.storage import jobs as job_store

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
    """Runs the jobs of one worker. Scheduled ticks run as :data:`~voicemon.domain.access.SYSTEM`; the
    methods a caller asks for (:meth:`run_now`, :meth:`overview`, :meth:`runs`) need a staff principal."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        jobs: list[JobDefinition],
        observe: Callable[[str, str], None] = lambda job, status: None,
    ) -> None:
        """``observe(job, status)`` hears of every run this runner finished."""
        self._observe = observe
        self._db = db
        self._clock = clock
        self._lease_ms = settings.job_lease_s * 1000
        # How often a heartbeat looks at the clock (real seconds); it renews every third of a lease.
        self._heartbeat_poll_s = min(settings.scheduler_poll_s, settings.job_lease_s / 3)
        self.jobs = {j.name: JobDefinition(j.name, validate(j.schedule), j.run, j.check) for j in jobs}
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self._tick_lock = threading.Lock()
        # Job name -> the thread of its lane's latest run (busy while alive).
        self._lanes: dict[str, threading.Thread] = {}

    def job(self, name: str) -> JobDefinition:
        found = self.jobs.get(name)
        if found is None:
            raise NotFoundError(f"no job named {name!r}; jobs: {', '.join(self.jobs)}", code="job_not_found")
        return found

    def run_now(self, principal: Principal, name: str, target_ms: int | None = None) -> RunRecord:
        """Run a job by hand, to its end, in the caller's thread (renewing its lease meanwhile); the
        returned record says how it went. Raises ForbiddenError unless ``principal`` is staff,
        NotFoundError for an unknown job, and the job's own refusal of ``target_ms`` before anything is
        recorded."""
        require_role(principal, *STAFF_ONLY)
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
        """One scheduler step, as SYSTEM: reap runs whose lease ran out, insert the due tick of each job
        whose lane is free, and start in its lane each of those jobs' runs this worker can claim.

        Returns the runs started (as claimed); they go on after it returns, and :meth:`flush` waits for
        them. Never waits for a run itself, so a long run delays no other job's tick."""
        with self._tick_lock:
            idle = [j for j in self.jobs.values() if not self._busy(j.name)]
            now_ms = self._clock.now_ms()
            with self._db.write() as conn:
                reaped = job_store.reap_expired(conn, now_ms)
                for job in idle:
                    job_store.insert_tick(
                        conn, uuid.uuid4().hex, job.name, previous_fire(job.schedule, now_ms)
                    )
            if reaped:
                logger.warning("crashed runs reaped", extra={"action": "runs_reaped", "count": reaped})
            now_ms = self._clock.now_ms()
            with self._db.write() as conn:
                claims = (
                    job_store.claim_next(conn, self.owner, now_ms, now_ms + self._lease_ms, job.name)
                    for job in idle
                )
                claimed = [c for c in claims if c is not None]
            for record in claimed:
                lane = threading.Thread(
                    target=self._lane, args=(record,), name=f"voicemon-job-{record.name}", daemon=True
                )
                self._lanes[record.name] = lane
                lane.start()
            return claimed

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the runs in flight in this worker's lanes have ended; False if ``timeout_s`` (real
        seconds) passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(lane.is_alive() for lane in lanes)

    def _busy(self, name: str) -> bool:
        lane = self._lanes.get(name)
        return lane is not None and lane.is_alive()

    def _lane(self, record: RunRecord) -> None:
        try:
            self._execute(record, self.jobs[record.name])
        except Exception:
            # Only the store can fail here (the job's own errors are recorded). The run stays running
            # without a heartbeat, so the next tick after its lease reaps it.
            logger.exception(
                "job run not recorded",
                extra={"action": "job_unrecorded", "job": record.name, "run_id": record.run_id},
            )

    def _execute(self, record: RunRecord, job: JobDefinition) -> RunRecord:
        logger.info("job started", extra={"action": "job_started", "job": job.name, "run_id": record.run_id})
        outcome: tuple[str, str | None, str | None]
        with Heartbeat(self._db, self._clock, record, lease_ms=self._lease_ms, poll_s=self._heartbeat_poll_s):
            try:
                summary = orjson.dumps(job.run(record.target_ms)).decode()
            except Exception as exc:
                # Logged and recorded, never retried here: the next scheduled run catches up.
                logger.exception(
                    "job failed", extra={"action": "job_failed", "job": job.name, "run_id": record.run_id}
                )
                outcome = (job_store.FAILED, None, f"{exc.__class__.__name__}: {exc}")
            else:
                logger.info(
                    "job finished", extra={"action": "job_finished", "job": job.name, "run_id": record.run_id}
                )
                outcome = (job_store.SUCCEEDED, summary, None)
        return self._finish(record, *outcome)

    def _finish(self, record: RunRecord, status: str, summary: str | None, error: str | None) -> RunRecord:
        """The run's final record: this outcome, or the record of whoever took the run over meanwhile."""
        with self._db.write() as conn:
            done = job_store.finish(
                conn, record.run_id, self.owner, status, self._clock.now_ms(), summary, error
            )
            if done is not None:
                self._observe(record.name, status)
                return done
            stored = job_store.get_run(conn, record.run_id)
        logger.warning(
            "run lost: its finish is refused, it was taken as crashed while it still ran",
            extra={
                "action": "run_lost",
                "job": record.name,
                "run_id": record.run_id,
                "status": stored.status,
                "refused_status": status,
            },
        )
        return stored

    def overview(self, principal: Principal) -> list[JobOverview]:
        """Each job with its next fire time and its last run. Raises ForbiddenError unless staff."""
        require_role(principal, *STAFF_ONLY)
        now_ms = self._clock.now_ms()
        with self._db.read() as conn:
            last = job_store.last_runs(conn, list(self.jobs))
        return [JobOverview(j, next_fire(j.schedule, now_ms), last.get(j.name)) for j in self.jobs.values()]

    def runs(self, principal: Principal, name: str | None, limit: int) -> list[RunRecord]:
        """Recent runs, newest first, of one job or all. Raises ForbiddenError unless staff."""
        require_role(principal, *STAFF_ONLY)
        if name is not None:
            self.job(name)
        with self._db.read() as conn:
            return job_store.list_runs(conn, name, limit)
