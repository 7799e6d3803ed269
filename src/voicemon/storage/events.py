"""Raw events: bulk insert, existence checks, and keyset-paged reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, Row, and_, func, or_, select

from voicemon.domain.events import Event, dumps_metadata
from voicemon.domain.model import ArtifactKey, EventType, Stage, Status, owner_organization
from voicemon.domain.records import EventFilter, StoredEvent
from voicemon.storage.dialect import Answer, ask_keys, bulk_insert, locks_rows, send_many
from voicemon.storage.tables import events

PPB = 1_000_000_000


def to_micros(duration_ms: float | None) -> int | None:
    """Durations are kept as integer microseconds so that sums of them are exact in any order."""
    return round(duration_ms * 1000) if duration_ms is not None else None


def to_ppb(score: float | None) -> int | None:
    """Confidence scores are kept as integer parts per billion, for the same reason."""
    return round(score * PPB) if score is not None else None


# pg_advisory_xact_lock key: "storing events that belong to no artifact".
_UNOWNED_EVENTS_LOCK = 0x766D_6576_756E  # "vmevun"


def guard_unowned(conn: Connection) -> None:
    """PostgreSQL: hold, until this transaction ends, the lock every writer of events that belong to no
    artifact takes before it asks which ids are stored (a writer's other events are guarded by their
    artifacts' row locks, which it takes first). Queued in a pipelined write. On SQLite the write
    transaction is exclusive already."""
    if locks_rows(conn):
        send_many(conn, "SELECT pg_advisory_xact_lock(?)", [(_UNOWNED_EVENTS_LOCK,)])


def ask_stored_ids(conn: Connection, ids: Sequence[str]) -> Answer[set[str]]:
    """Which of ``ids`` are stored already (sent now, answered when called). Asked after the writer's
    locks (see :func:`voicemon.service.ingest.store_events`), on PostgreSQL it sees every event stored by
    a writer that held one of them."""
    rows = ask_keys(conn, "SELECT event_id FROM events WHERE event_id {keys}", ids)
    return lambda: {row[0] for row in rows()}


def insert_events(conn: Connection, new_events: Sequence[Event]) -> None:
    """Insert events whose ids were checked to be new. A plain INSERT (the driver's fast executemany):
    if another writer stored one of the ids meanwhile, the unique index refuses it and the caller's
    transaction is rolled back and redone."""
    bulk_insert(conn, events, INSERT_COLUMNS, [_to_row(e) for e in new_events])


INSERT_COLUMNS = (
    "event_id",
    "event_type",
    "artifact_id",
    "organization_id",
    "voice_note_id",
    "coach_user_id",
    "pipeline_stage",
    "ts_ms",
    "received_ms",
    "stage_started_at_ms",
    "stage_completed_at_ms",
    "duration_us",
    "previous_status",
    "new_status",
    "error_message",
    "error_code",
    "metadata",
    "cost_nusd",
    "confidence_ppb",
    "claim_count",
    "entity_count",
    "draft_count",
)


def _to_row(e: Event) -> tuple[Any, ...]:
    """The event as a tuple in :data:`INSERT_COLUMNS` order."""
    return (
        e.event_id,
        e.event_type._value_,
        e.artifact_id,
        e.organization_id,
        e.voice_note_id,
        e.coach_user_id,
        e.pipeline_stage._value_ if e.pipeline_stage else None,
        e.timestamp_ms,
        e.received_ms,
        e.stage_started_at_ms,
        e.stage_completed_at_ms,
        to_micros(e.duration_ms),
        e.previous_status._value_ if e.previous_status else None,
        e.new_status._value_ if e.new_status else None,
        e.error_message,
        e.error_code,
        dumps_metadata(e.metadata),
        e.cost_nusd,
        to_ppb(e.confidence),
        e.claim_count,
        e.entity_count,
        e.draft_count,
    )


def _from_row(row: Row[Any]) -> StoredEvent:
    m = row._mapping
    return StoredEvent(
        seq=m["seq"],
        event=Event(
            event_id=m["event_id"],
            event_type=EventType(m["event_type"]),
            artifact_id=m["artifact_id"],
            organization_id=m["organization_id"],
            voice_note_id=m["voice_note_id"],
            coach_user_id=m["coach_user_id"],
            pipeline_stage=Stage(m["pipeline_stage"]) if m["pipeline_stage"] else None,
            timestamp_ms=m["ts_ms"],
            received_ms=m["received_ms"],
            stage_started_at_ms=m["stage_started_at_ms"],
            stage_completed_at_ms=m["stage_completed_at_ms"],
            duration_ms=m["duration_us"] / 1000 if m["duration_us"] is not None else None,
            previous_status=Status(m["previous_status"]) if m["previous_status"] else None,
            new_status=Status(m["new_status"]) if m["new_status"] else None,
            error_message=m["error_message"],
            error_code=m["error_code"],
            metadata=orjson.loads(m["metadata"]) if m["metadata"] is not None else None,
            cost_nusd=m["cost_nusd"],
            confidence=m["confidence_ppb"] / PPB if m["confidence_ppb"] is not None else None,
            claim_count=m["claim_count"],
            entity_count=m["entity_count"],
            draft_count=m["draft_count"],
        ),
    )


def list_events(
    conn: Connection, f: EventFilter, after: tuple[int, int] | None, limit: int
) -> list[StoredEvent]:
    """Newest first by (timestamp, seq); ``after`` is the (ts_ms, seq) of the last row already returned.

    The key is unique and fixed per row, so rows that arrive while a client pages never shift a page
    boundary: they appear before the first page or in their place by timestamp, never twice.
    """
    conds = _conditions(f)
    if after is not None:
        ts, seq = after
        conds.append(or_(events.c.ts_ms < ts, and_(events.c.ts_ms == ts, events.c.seq < seq)))
    query = (
        select(events)
        .where(and_(True, *conds))
        .order_by(events.c.ts_ms.desc(), events.c.seq.desc())
        .limit(limit)
    )
    return [_from_row(r) for r in conn.execute(query)]


def _conditions(f: EventFilter) -> list[Any]:
    conds: list[Any] = []
    if f.event_type is not None:
        conds.append(events.c.event_type == f.event_type)
    if f.pipeline_stage is not None:
        conds.append(events.c.pipeline_stage == f.pipeline_stage)
    if f.organization_id is not None:
        conds.append(events.c.organization_id == f.organization_id)
    if f.artifact_id is not None:
        conds.append(events.c.artifact_id == f.artifact_id)
    if f.start_ms is not None:
        conds.append(events.c.ts_ms >= f.start_ms)
    if f.end_ms is not None:
        conds.append(events.c.ts_ms < f.end_ms)
    return conds


STREAM_BATCH_ROWS = 2000
"""Rows fetched from the database at a time by a stream (a server-side cursor on PostgreSQL)."""


def stream_events(conn: Connection, f: EventFilter, columns: Sequence[str]) -> Iterator[Row[Any]]:
    """Every event of the filter, oldest first by (timestamp, seq), as rows of ``columns``; fetched
    :data:`STREAM_BATCH_ROWS` at a time, so memory stays flat whatever the count. Iterate it inside the
    read that ``conn`` belongs to."""
    query = (
        select(*(events.c[name] for name in columns))
        .where(and_(True, *_conditions(f)))
        .order_by(events.c.ts_ms, events.c.seq)
    )
    result = conn.execution_options(yield_per=STREAM_BATCH_ROWS).execute(query)
    try:
        yield from result
    finally:
        result.close()  # the server-side cursor, also when the reader stops early or the read fails


def count_events(conn: Connection, f: EventFilter | None = None) -> int:
    """How many stored events the filter keeps (all of them without one)."""
    query = select(func.count()).select_from(events).where(and_(True, *_conditions(f or EventFilter())))
    return int(conn.execute(query).scalar_one())


def timeline(conn: Connection, key: ArtifactKey) -> list[StoredEvent]:
    """All stored events of one artifact (its organization's events with its id), oldest first (arrival
    order breaks timestamp ties)."""
    owner, artifact_id = key
    org = owner_organization(owner)
    same_org = events.c.organization_id.is_(None) if org is None else events.c.organization_id == org
    query = (
        select(events)
        .where(events.c.artifact_id == artifact_id, same_org)
        .order_by(events.c.ts_ms.asc(), events.c.seq.asc())
    )
    return [_from_row(r) for r in conn.execute(query)]
