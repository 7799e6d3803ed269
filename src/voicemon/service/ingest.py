"""Ingestion (SPEC 3.5): validate each item, then store the new events, their counters and their
artifacts' summaries in one transaction.

The data path, in order:

1. :func:`validate_items` turns decoded JSON into :class:`Event` values or per-item errors (pure).
2. :class:`~voicemon.service.writer.GroupCommitWriter` collects the events of concurrent requests.
3. :func:`store_events` runs inside one write transaction: it drops ids already stored, locks and folds
   the artifacts, inserts the events, adds the minute-counter deltas, and bumps the version of every
   hour and day it added events to (so an aggregated period knows it must be redone), and records the
   artifacts whose place in the artifact list changed (so a cursor lists them where they were). A fixed
   number of statements per call, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from voicemon.domain.access import Principal
from voicemon.domain.artifacts import ArtifactState, event_key, fold
from voicemon.domain.counters import bucket_deltas
from voicemon.domain.events import Event, FieldError, ValidationContext, validate_event
from voicemon.domain.ids import time_ordered_id
from voicemon.domain.model import FAILURE_TYPES, ArtifactKey, EventType
from voicemon.domain.otlp import Span, map_spans
from voicemon.domain.periods import touched_periods
from voicemon.domain.retries import EventMaker, decide_outcomes
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import counters as counter_store
from voicemon.storage import events as event_store
from voicemon.storage import retries as retry_store
from voicemon.storage import snapshots as snapshot_store

MAX_BATCH_EVENTS = 1000
# The events that can end a retry in flight.
OUTCOME_TYPES = FAILURE_TYPES | {EventType.ARTIFACT_COMPLETED}


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: str | None
    errors: list[FieldError]


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def validate_items(
    items: Sequence[object], principal: Principal, now_ms: int, event_retention_ms: int
) -> tuple[list[Event], list[Rejection]]:
    """Validate every item on its own; returns the valid events and a report of the others."""
    ctx = ValidationContext(
        now_ms=now_ms,
        event_retention_ms=event_retention_ms,
        scope_organization_id=principal.organization_id,
        new_event_id=time_ordered_id,
    )
    valid: list[Event] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(items):
        outcome = validate_event(raw, ctx)
        if isinstance(outcome, Event):
            valid.append(outcome)
        else:
            given = raw.get("event_id") if isinstance(raw, dict) else None
            rejected.append(Rejection(index, given if isinstance(given, str) else None, outcome))
    return valid, rejected


def store_events(conn: Connection, batch: Sequence[Event], now_ms: int) -> set[str]:
    """Store the events not stored before, inside the caller's write transaction.

    Returns the ids that this call stored. The first of several events with one id wins. Another writer
    storing the same events waits for our locks (or we for its), so it sees them stored; and should an
    id be stored meanwhile by other means, the insert fails on the unique index
    (:class:`~voicemon.errors.IntegrityConflict` from the transaction), the caller rolls back and calls
    again, and the second call sees the id as stored.
    """
    unique: dict[str, Event] = {}
    for event in batch:
        unique.setdefault(event.event_id, event)
    # The reads go out together (one round trip on PostgreSQL): whether each id is stored, the artifacts'
    # summaries, locked, and their retries in flight. The last two are asked for every artifact of the
    # batch, before the duplicates are known: a duplicate's artifact exists already, so this locks one
    # more row at most (or, if its summary expired, writes an empty row that is removed again below).
    # An artifact is named by its organization and id: an event never touches another organization's.
    keys = sorted({k for e in unique.values() if (k := event_key(e)) is not None})
    # A completion or failure of an artifact with a retry in flight ends that retry (SPEC 9), and the
    # retry_succeeded / retry_failed event it logs is stored with the events that caused it.
    endings = {
        k for e in unique.values() if e.event_type in OUTCOME_TYPES and (k := event_key(e)) is not None
    }
    # The locks go first, so that the stored ids are read after them. PostgreSQL reads each statement
    # at its own moment: a writer that stored one of these events before us held its artifact's row
    # lock (or, for an event of no artifact, the guard) until it committed, so we see its events. The
    # unique index (event_id, ts_ms) could not catch a re-sent event whose timestamp the server gave.
    if any(event_key(e) is None for e in unique.values()):
        event_store.guard_unowned(conn)
    locked = artifact_store.ask_locked(conn, keys, now_ms)
    stored = event_store.ask_stored_ids(conn, list(unique))
    retries_in_flight = retry_store.ask_in_flight(conn, sorted(endings))

    before, known, flying = locked(), stored(), retries_in_flight()
    fresh = [e for e in unique.values() if e.event_id not in known]
    changed = sorted({k for e in fresh if (k := event_key(e)) is not None})
    # Rare: every event of an artifact was a duplicate and its summary had expired. Nothing to save.
    artifact_store.drop_placeholders(conn, sorted(set(keys) - set(changed) - set(before)))
    if not fresh:
        return set()
    outcomes = (
        decide_outcomes(fresh, flying, EventMaker(_voice_notes(before, fresh), now_ms)) if flying else []
    )
    after, timed = fold([*fresh, *(o.event for o in outcomes)], before)

    # The writes return nothing: on PostgreSQL they travel with the COMMIT.
    event_store.insert_events(conn, timed)
    artifact_store.save_artifacts(conn, [after[k] for k in changed], set(before))
    counter_store.add_to_buckets(conn, bucket_deltas(timed))
    snapshot_store.bump_versions(conn, touched_periods(timed))
    retry_store.finish_many(conn, outcomes)
    # Last: it may take the artifact list's version lock, which no writer may hold while it waits.
    artifact_store.record_moves(conn, before, [after[k] for k in changed])
    return {e.event_id for e in timed}


def _voice_notes(
    before: dict[ArtifactKey, ArtifactState], fresh: Sequence[Event]
) -> dict[ArtifactKey, str | None]:
    """Voice note of each artifact, for the events a retry logs."""
    out = {key: s.voice_note_id for key, s in before.items()}
    for e in fresh:
        key = event_key(e)
        if key is not None and out.get(key) is None:
            out[key] = e.voice_note_id
    return out


@dataclass(frozen=True, slots=True)
class SpanResult:
    """What became of a batch of OTLP spans: how many were taken (their events stored now or before),
    and each refused span's id with why. A refused span stores nothing, not even its valid events."""

    accepted_spans: int
    refused: list[tuple[str, str]]
    ignored_spans: int
    events: IngestResult


def span_batch(
    spans: Sequence[Span], principal: Principal, now_ms: int, event_retention_ms: int
) -> tuple[list[Event], SpanResult, list[dict[str, Any]]]:
    """The events of ``spans`` that may be stored (every event of each span that is wholly valid), the
    report (its ``events.accepted`` and ``duplicates`` are filled in once they are committed), and the
    event objects the spans mapped to (which the rejections' indexes point into)."""
    mapped = map_spans(spans)
    valid, rejected = validate_items(mapped.items, principal, now_ms, event_retention_ms)
    refused = dict(mapped.refused)
    for r in rejected:
        first = r.errors[0]
        refused.setdefault(mapped.span_of_item[r.index], f"{first.field}: {first.message}")
    rejected_items = {r.index for r in rejected}
    kept_items = (i for i in range(len(mapped.items)) if i not in rejected_items)
    keep = [e for e, i in zip(valid, kept_items, strict=True) if mapped.span_of_item[i] not in refused]
    report = SpanResult(
        accepted_spans=len(spans) - len(refused) - mapped.ignored,
        refused=[(spans[i].span_id, why) for i, why in sorted(refused.items())],
        ignored_spans=mapped.ignored,
        events=IngestResult(rejected=rejected),
    )
    return keep, report, mapped.items
