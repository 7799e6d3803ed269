"""Retry records: who asked for which retry of an artifact, and how it ended (the commands to deliver are
in the outbox, :mod:`voicemon.storage.outbox`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update

from voicemon.domain.model import ArtifactKey, owner_organization
from voicemon.domain.retries import IN_FLIGHT, FromStatus, Outcome, Retry, RetryStage, RetryStatus
from voicemon.storage.dialect import Answer, ask_pairs, send_many
from voicemon.storage.tables import retries


def _retry(m: Mapping[Any, Any]) -> Retry:
    return Retry(
        retry_id=m["retry_id"],
        artifact_id=m["artifact_id"],
        organization_id=owner_organization(m["owner"]),
        stage=RetryStage(m["stage"]),
        attempt=m["attempt"],
        requested_by=m["requested_by"],
        reason=m["reason"],
        status=RetryStatus(m["status"]),
        from_status=FromStatus(m["from_status"]),
        created_ms=m["created_ms"],
        dispatched_ms=m["dispatched_ms"],
        finished_ms=m["finished_ms"],
        error=m["error"],
    )


@dataclass(frozen=True, slots=True)
class RetryStats:
    """What a new retry request is checked against: the highest attempt number so far and the recent
    retries. (The highest number, not a count: the oldest records expire by age while the artifact stays.)"""

    attempts: int
    recent: int
    in_flight: Retry | None


def stats(conn: Connection, key: ArtifactKey, since_ms: int) -> RetryStats:
    r = retries.c
    owner, artifact_id = key
    of_artifact = (r.owner == owner, r.artifact_id == artifact_id)
    attempts, recent = conn.execute(
        select(func.max(r.attempt), func.count().filter(r.created_ms > since_ms)).where(*of_artifact)
    ).one()
    row = conn.execute(
        select(retries).where(*of_artifact, r.status.in_([s.value for s in IN_FLIGHT]))
    ).first()
    return RetryStats(int(attempts or 0), int(recent or 0), _retry(row._mapping) if row is not None else None)


def insert_retry(conn: Connection, retry: Retry) -> None:
    conn.execute(
        retries.insert().values(
            retry_id=retry.retry_id,
            owner=retry.key[0],
            artifact_id=retry.artifact_id,
            stage=retry.stage.value,
            attempt=retry.attempt,
            requested_by=retry.requested_by,
            reason=retry.reason,
            status=retry.status.value,
            from_status=retry.from_status.value,
            created_ms=retry.created_ms,
        )
    )


def in_flight(conn: Connection, keys: Sequence[ArtifactKey]) -> dict[ArtifactKey, Retry]:
    return ask_in_flight(conn, keys)()


def ask_in_flight(conn: Connection, keys: Sequence[ArtifactKey]) -> Answer[dict[ArtifactKey, Retry]]:
    """The retry in flight of each artifact that has one (sent now, answered when called)."""
    rows = ask_pairs(conn, _IN_FLIGHT_SQL, sorted(set(keys)))

    def answer() -> dict[ArtifactKey, Retry]:
        found = (_retry(dict(zip(_COLUMNS, row, strict=True))) for row in rows())
        return {r.key: r for r in found}

    return answer


_COLUMNS = [c.name for c in retries.columns]
_IS_IN_FLIGHT = "status IN (" + ", ".join(f"'{s.value}'" for s in sorted(IN_FLIGHT)) + ")"
_IN_FLIGHT_SQL = (
    f"SELECT {', '.join(_COLUMNS)} FROM retries WHERE (owner, artifact_id) {{keys}} AND {_IS_IN_FLIGHT}"
)
_FINISH_SQL = (
    f"UPDATE retries SET status = ?, finished_ms = ?, error = ? WHERE retry_id = ? AND {_IS_IN_FLIGHT}"
)


def finish_many(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    """Record the retries ended by events (only those still in flight)."""
    send_many(conn, _FINISH_SQL, [(o.status.value, o.finished_ms, o.error, o.retry_id) for o in outcomes])


def mark_dispatched(conn: Connection, retry_id: str, now_ms: int) -> None:
    r = retries.c
    conn.execute(
        update(retries)
        .where(r.retry_id == retry_id, r.status == RetryStatus.PENDING.value)
        .values(status=RetryStatus.DISPATCHED.value, dispatched_ms=now_ms)
    )


def fail_in_flight(conn: Connection, retry_id: str, now_ms: int, error: str) -> Retry | None:
    """Mark an in-flight retry failed; returns it, or None if it had already ended."""
    r = retries.c
    row = conn.execute(
        update(retries)
        .where(r.retry_id == retry_id, r.status.in_([s.value for s in IN_FLIGHT]))
        .values(status=RetryStatus.FAILED.value, finished_ms=now_ms, error=error)
        .returning(*retries.c)
    ).first()
    return _retry(row._mapping) if row is not None else None


def list_for(conn: Connection, key: ArtifactKey) -> list[Retry]:
    r = retries.c
    owner, artifact_id = key
    query = select(retries).where(r.owner == owner, r.artifact_id == artifact_id).order_by(r.attempt)
    return [_retry(row._mapping) for row in conn.execute(query)]
