"""Batched deletion of expired rows: each call deletes at most ``batch`` rows, oldest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Table, delete, exists, select, tuple_

from voicemon.storage.tables import (
    alert_deliveries,
    alert_transitions,
    alerts,
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
    # Set only when an alert resolves: an open alert is never deleted, however old.
    "alerts": (alerts, "resolved_ms"),
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
    # The age condition again outside: on partitioned events it keeps the DELETE to the expired days.
    result = conn.execute(delete(table).where(target.in_(chosen), table.c[column] < cutoff_ms))
    return int(result.rowcount or 0)


def delete_orphans(
    conn: Connection, batch: int, *, child: Table, parent: Table, link: tuple[str, ...]
) -> int:
    """Delete up to ``batch`` rows of ``child`` whose parent row (matched on the ``link`` columns, named
    alike in both tables) is gone: what lives exactly as long as its parent."""
    key: list[Column[Any]] = list(child.primary_key.columns)
    orphan = ~exists().where(*(parent.c[name] == child.c[name] for name in link))
    chosen = select(*key).where(orphan).limit(batch)
    target = key[0] if len(key) == 1 else tuple_(*key)
    result = conn.execute(delete(child).where(target.in_(chosen)))
    return int(result.rowcount or 0)


# Rows kept exactly as long as their parent (SPEC 4, 14): child -> (parent, link columns).
DEPENDENT: dict[str, tuple[Table, Table, tuple[str, ...]]] = {
    # Retry history outlives raw events: it goes with its artifact's summary.
    "retries": (retries, artifacts, ("owner", "artifact_id")),
    # Where artifacts were listed before they moved (decision 0024): only read to list the artifact.
    "artifact_moves": (artifact_moves, artifacts, ("owner", "artifact_id")),
    # An alert's history goes with the alert.
    "alert_transitions": (alert_transitions, alerts, ("alert_id",)),
    "alert_deliveries": (alert_deliveries, alerts, ("alert_id",)),
}
