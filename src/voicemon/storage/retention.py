"""Batched deletion of expired rows: each call deletes at most ``batch`` rows, oldest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Table, delete, exists, select, tuple_

from voicemon.storage.tables import (
    artifact_moves,
    artifacts,
    events,
    job_runs,
    minute_counters,
    outbox,
    period_versions,
    retries,
    snapshots,
)

# What each kind of expiring row is aged by.
EXPIRING: dict[str, tuple[Table, str]] = {
    "events": (events, "ts_ms"),
    "minute_counters": (minute_counters, "minute_ms"),
    "artifacts": (artifacts, "last_event_at_ms"),
    "job_runs": (job_runs, "scheduled_for_ms"),
    "period_versions": (period_versions, "period_start_ms"),
    "snapshots": (snapshots, "period_start_ms"),
    # Set only when an entry is settled (delivered, skipped or dead): a pending entry, still owed, has
    # none and is never deleted, however old.
    "outbox": (outbox, "finished_ms"),
}


def delete_expired(
    conn: Connection, kind: str, cutoff_ms: int, batch: int, *, where: dict[str, Any] | None = None
) -> int:
    """Delete up to ``batch`` rows of ``kind`` whose age column is strictly before ``cutoff_ms``.

    A row exactly at the cutoff is kept. ``where`` adds equality filters (e.g. the snapshot period type).
    """
    table, column = EXPIRING[kind]
    key: list[Column[Any]] = list(table.primary_key.columns)
    conds = [table.c[column] < cutoff_ms, *(table.c[k] == v for k, v in (where or {}).items())]
    chosen = select(*key).where(*conds).order_by(table.c[column]).limit(batch)
    target = key[0] if len(key) == 1 else tuple_(*key)
    result = conn.execute(delete(table).where(target.in_(chosen)))
    return int(result.rowcount or 0)


def delete_orphan_retries(conn: Connection, batch: int) -> int:
    """Delete up to ``batch`` retry records whose artifact summary is gone: retry history lives exactly
    as long as its artifact's summary (SPEC 4)."""
    r = retries.c
    orphan = ~exists().where(artifacts.c.owner == r.owner, artifacts.c.artifact_id == r.artifact_id)
    chosen = select(r.retry_id).where(orphan).limit(batch)
    result = conn.execute(delete(retries).where(r.retry_id.in_(chosen)))
    return int(result.rowcount or 0)


def delete_orphan_moves(conn: Connection, batch: int) -> int:
    """Delete up to ``batch`` artifact moves whose artifact summary is gone: a move is only read to list
    its artifact, so it lives exactly as long as the summary."""
    m = artifact_moves.c
    orphan = ~exists().where(artifacts.c.owner == m.owner, artifacts.c.artifact_id == m.artifact_id)
    chosen = select(m.owner, m.artifact_id, m.version).where(orphan).limit(batch)
    result = conn.execute(delete(artifact_moves).where(tuple_(m.owner, m.artifact_id, m.version).in_(chosen)))
    return int(result.rowcount or 0)
