"""Artifact summaries: locked bulk read, bulk write, keyset-paged lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Row, and_, bindparam, or_, select, update

from voicemon.domain.artifacts import ArtifactState
from voicemon.domain.model import ACTIVE_STATUSES, Stage, Status
from voicemon.storage.database import insert_ignore, lock_for_update
from voicemon.storage.tables import artifacts

IN_CHUNK = 1000
_STATE_COLUMNS = [c.name for c in artifacts.columns if c.name != "artifact_id"]


@dataclass(frozen=True, slots=True)
class ArtifactFilter:
    """``status`` is a status value, ``active`` or ``stuck``; ``stuck_before_ms`` applies to ``stuck``."""

    status: str | None = None
    organization_id: str | None = None
    stuck_before_ms: int | None = None


def lock_artifacts(conn: Connection, ids: Sequence[str], placeholder_ms: int) -> dict[str, ArtifactState]:
    """Read the summaries of ``ids`` for update; rows missing so far come back absent.

    On PostgreSQL, several servers may ingest events of one artifact at once. Each first inserts an empty
    row for every id (sorted, so two writers never wait on each other in a cycle), then locks the rows:
    the second writer waits for the first to commit and folds its events onto the committed state.
    """
    if not ids:
        return {}
    ordered = sorted(set(ids))
    if conn.dialect.name == "postgresql":
        conn.execute(
            insert_ignore(conn, artifacts, ["artifact_id"]),
            [_placeholder(i, placeholder_ms) for i in ordered],
        )
    found: dict[str, ArtifactState] = {}
    for i in range(0, len(ordered), IN_CHUNK):
        chunk = ordered[i : i + IN_CHUNK]
        query = select(artifacts).where(artifacts.c.artifact_id.in_(chunk)).order_by(artifacts.c.artifact_id)
        for row in conn.execute(lock_for_update(conn, query)):
            state = _from_row(row)
            if state.event_count > 0:
                found[state.artifact_id] = state
    return found


def _placeholder(artifact_id: str, now_ms: int) -> dict[str, Any]:
    """An empty summary (no events yet): never listed, replaced within the same transaction."""
    return {
        "artifact_id": artifact_id,
        "status": Status.RECEIVED.value,
        "first_event_at_ms": now_ms,
        "last_event_at_ms": now_ms,
        "listed_at_ms": now_ms,
        "event_count": 0,
        "retry_count": 0,
        "total_cost_nusd": 0,
        "stage_started": "{}",
    }


def save_artifacts(conn: Connection, states: Sequence[ArtifactState], existing: set[str]) -> None:
    """Write the new summaries: UPDATE the rows that exist, INSERT the others (one statement each)."""
    rows = [_to_row(s) for s in states]
    if conn.dialect.name == "postgresql":
        # lock_artifacts inserted a placeholder for every id: all are updates.
        existing = {s.artifact_id for s in states}
    updates = [r for r in rows if r["artifact_id"] in existing]
    inserts = [r for r in rows if r["artifact_id"] not in existing]
    if inserts:
        conn.execute(artifacts.insert(), inserts)
    if updates:
        stmt = (
            update(artifacts)
            .where(artifacts.c.artifact_id == bindparam("b_artifact_id"))
            .values({name: bindparam(f"b_{name}") for name in _STATE_COLUMNS})
        )
        conn.execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in updates])


def _to_row(s: ArtifactState) -> dict[str, Any]:
    return {
        "artifact_id": s.artifact_id,
        "organization_id": s.organization_id,
        "voice_note_id": s.voice_note_id,
        "coach_user_id": s.coach_user_id,
        "source_channel": s.source_channel,
        "status": s.status.value,
        "status_at_ms": s.status_at_ms,
        "current_stage": s.current_stage.value if s.current_stage else None,
        "stage_at_ms": s.stage_at_ms,
        "failed_stage": s.failed_stage.value if s.failed_stage else None,
        "last_error_code": s.last_error_code,
        "last_error_message": s.last_error_message,
        "error_at_ms": s.error_at_ms,
        "received_at_ms": s.received_at_ms,
        "completed_at_ms": s.completed_at_ms,
        "first_event_at_ms": s.first_event_at_ms,
        "last_event_at_ms": s.last_event_at_ms,
        "listed_at_ms": s.listed_at_ms,
        "event_count": s.event_count,
        "retry_count": s.retry_count,
        "total_cost_nusd": s.total_cost_nusd,
        "stage_started": orjson.dumps(s.stage_started_ms).decode(),
    }


def _from_row(row: Row[Any]) -> ArtifactState:
    m = row._mapping
    return ArtifactState(
        artifact_id=m["artifact_id"],
        organization_id=m["organization_id"],
        voice_note_id=m["voice_note_id"],
        coach_user_id=m["coach_user_id"],
        source_channel=m["source_channel"],
        status=Status(m["status"]),
        status_at_ms=m["status_at_ms"],
        current_stage=Stage(m["current_stage"]) if m["current_stage"] else None,
        stage_at_ms=m["stage_at_ms"],
        failed_stage=Stage(m["failed_stage"]) if m["failed_stage"] else None,
        last_error_code=m["last_error_code"],
        last_error_message=m["last_error_message"],
        error_at_ms=m["error_at_ms"],
        received_at_ms=m["received_at_ms"],
        completed_at_ms=m["completed_at_ms"],
        first_event_at_ms=m["first_event_at_ms"],
        last_event_at_ms=m["last_event_at_ms"],
        event_count=m["event_count"],
        retry_count=m["retry_count"],
        total_cost_nusd=m["total_cost_nusd"],
        stage_started_ms=orjson.loads(m["stage_started"]),
    )


def get_artifact(conn: Connection, artifact_id: str) -> ArtifactState | None:
    row = conn.execute(
        select(artifacts).where(artifacts.c.artifact_id == artifact_id, artifacts.c.event_count > 0)
    ).first()
    return _from_row(row) if row is not None else None


def list_artifacts(
    conn: Connection, f: ArtifactFilter, after: tuple[int, str] | None, limit: int
) -> list[ArtifactState]:
    """Newest received first, keyed by (listed_at_ms, artifact_id); ``after`` is the last row returned."""
    c = artifacts.c
    conds: list[Any] = [c.event_count > 0]
    if f.organization_id is not None:
        conds.append(c.organization_id == f.organization_id)
    if f.status == "active":
        conds.append(c.status.in_([s.value for s in ACTIVE_STATUSES]))
    elif f.status == "stuck":
        conds.append(c.status.in_([s.value for s in ACTIVE_STATUSES]))
        if f.stuck_before_ms is not None:
            conds.append(c.last_event_at_ms < f.stuck_before_ms)
    elif f.status is not None:
        conds.append(c.status == f.status)
    if after is not None:
        listed, artifact_id = after
        conds.append(
            or_(c.listed_at_ms < listed, and_(c.listed_at_ms == listed, c.artifact_id < artifact_id))
        )
    query = select(artifacts).where(and_(*conds)).order_by(c.listed_at_ms.desc(), c.artifact_id.desc())
    return [_from_row(r) for r in conn.execute(query.limit(limit))]
