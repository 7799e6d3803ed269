"""Job runs: insert a tick once, claim pending runs without two workers taking the same, renew a running
run's lease, finish, reap. Renewing and finishing are guarded by owner and state: only the worker that
holds a run, while it is still ``running``, may touch it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select, text, update

from voicemon.domain.records import RunRecord
from voicemon.storage.dialect import claim_lock, insert_ignore
from voicemon.storage.tables import job_runs

SCHEDULED = text("trigger = 'schedule'")
PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"


def _record(row: Any) -> RunRecord:
    return RunRecord(**dict(row._mapping))


def insert_tick(conn: Connection, run_id: str, name: str, scheduled_for_ms: int) -> bool:
    """Insert the pending run of one scheduled tick; False when some scheduler already inserted it."""
    stmt = insert_ignore(conn, job_runs, ["name", "scheduled_for_ms"], where=SCHEDULED).returning(
        job_runs.c.run_id
    )
    row = conn.execute(
        stmt,
        [
            {
                "run_id": run_id,
                "name": name,
                "trigger": "schedule",
                "scheduled_for_ms": scheduled_for_ms,
                "status": PENDING,
            }
        ],
    ).first()
    return row is not None


def insert_running(
    conn: Connection,
    run_id: str,
    name: str,
    now_ms: int,
    target_ms: int | None,
    owner: str,
    lease_until_ms: int,
) -> RunRecord:
    """A run requested by hand: recorded as running from the start."""
    values = {
        "run_id": run_id,
        "name": name,
        "trigger": "manual",
        "scheduled_for_ms": now_ms,
        "target_ms": target_ms,
        "status": RUNNING,
        "owner": owner,
        "lease_until_ms": lease_until_ms,
        "started_ms": now_ms,
    }
    conn.execute(job_runs.insert().values(**values))
    return get_run(conn, run_id)


def claim_next(conn: Connection, owner: str, now_ms: int, lease_until_ms: int, name: str) -> RunRecord | None:
    """Take the oldest pending run of job ``name``. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several
    workers claim different runs at once; SQLite's BEGIN IMMEDIATE already makes the claim exclusive."""
    r = job_runs.c
    query = select(r.run_id).where(r.status == PENDING, r.name == name).order_by(r.scheduled_for_ms).limit(1)
    run_id = conn.scalar(claim_lock(query, conn))
    if run_id is None:
        return None
    row = conn.execute(
        update(job_runs)
        .where(r.run_id == run_id, r.status == PENDING)
        .values(status=RUNNING, owner=owner, started_ms=now_ms, lease_until_ms=lease_until_ms)
        .returning(*job_runs.c)
    ).first()
    return None if row is None else _record(row)


def renew_lease(conn: Connection, run_id: str, owner: str, lease_until_ms: int) -> bool:
    """Push the lease of ``owner``'s running run to ``lease_until_ms``. False when the run is no longer
    running under this owner: it was reaped (taken as crashed), and its worker has lost it."""
    r = job_runs.c
    row = conn.execute(
        update(job_runs)
        .where(r.run_id == run_id, r.owner == owner, r.status == RUNNING)
        .values(lease_until_ms=lease_until_ms)
        .returning(r.run_id)
    ).first()
    return row is not None


def finish(
    conn: Connection,
    run_id: str,
    owner: str,
    status: str,
    now_ms: int,
    summary: str | None,
    error: str | None,
) -> RunRecord | None:
    """Record how ``owner``'s run ended. None, and nothing written, when the run is no longer running
    under this owner: a reaped run's ``failed`` record is never overwritten by its late finisher."""
    r = job_runs.c
    row = conn.execute(
        update(job_runs)
        .where(r.run_id == run_id, r.owner == owner, r.status == RUNNING)
        .values(status=status, finished_ms=now_ms, summary=summary, error=error, lease_until_ms=None)
        .returning(*job_runs.c)
    ).first()
    return None if row is None else _record(row)


def reap_expired(conn: Connection, now_ms: int) -> int:
    """Runs whose worker stopped renewing their lease (it crashed) are recorded as failed; returns how
    many. A lease exactly at ``now_ms`` is still held."""
    r = job_runs.c
    result = conn.execute(
        update(job_runs)
        .where(r.status == RUNNING, r.lease_until_ms < now_ms)
        .values(status=FAILED, finished_ms=now_ms, error="the worker running it stopped (lease expired)")
        .returning(r.run_id)
    )
    return len(result.all())


def get_run(conn: Connection, run_id: str) -> RunRecord:
    return _record(conn.execute(select(job_runs).where(job_runs.c.run_id == run_id)).one())


def last_runs(conn: Connection, names: Sequence[str]) -> dict[str, RunRecord]:
    """The most recent run of each job (by when it was due), in one query."""
    r = job_runs.c
    latest = (
        select(r.name, func.max(r.scheduled_for_ms).label("at"))
        .where(r.name.in_(list(names)), r.status != PENDING)
        .group_by(r.name)
        .subquery()
    )
    query = select(job_runs).join(latest, (r.name == latest.c.name) & (r.scheduled_for_ms == latest.c.at))
    found: dict[str, RunRecord] = {}
    for row in conn.execute(query):
        rec = _record(row)
        current = found.get(rec.name)
        if current is None or (rec.started_ms or 0) > (current.started_ms or 0):
            found[rec.name] = rec
    return found


def list_runs(conn: Connection, name: str | None = None, limit: int = 100) -> list[RunRecord]:
    r = job_runs.c
    query = select(job_runs).order_by(r.scheduled_for_ms.desc(), r.run_id.desc()).limit(limit)
    if name is not None:
        query = query.where(r.name == name)
    return [_record(row) for row in conn.execute(query)]
