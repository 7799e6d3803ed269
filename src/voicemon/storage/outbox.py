"""The outbox: deliveries to the outside, written in the transaction of the change that causes them and
delivered after commit by the dispatcher (SPEC 15).

An entry is ``pending`` until it is settled: ``delivered``, ``skipped`` (there was nothing to deliver any
more) or ``dead`` (given up on). ``next_attempt_ms`` doubles as the claim: a worker that takes an entry
pushes it into the future by a lease, so no other worker takes it meanwhile, and an entry whose worker
died comes due again. Claims are per kind, so a kind whose receiver is down never holds up another's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, select, update

from voicemon.storage.dialect import claim_lock
from voicemon.storage.tables import outbox

# Delivery ids are derived in this namespace from what identifies an entry in any database.
_DELIVERY_NAMESPACE = uuid.UUID("5f0c1c3e-8a3b-4d0e-9a57-6d1f0e2b7c41")


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    DEAD = "dead"


SETTLED = frozenset({OutboxStatus.DELIVERED, OutboxStatus.SKIPPED, OutboxStatus.DEAD})


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A claimed entry. ``attempts`` counts the attempt it was claimed for."""

    outbox_id: int
    kind: str
    ref_id: str
    payload: str
    attempts: int
    created_ms: int

    @property
    def delivery_id(self) -> str:
        """The id receivers drop duplicates by: the same on every attempt of this entry, and, unlike the
        bare row id, not repeated by another database (a recreated one counts its ids from 1 again)."""
        name = f"{self.outbox_id}:{self.created_ms}:{self.kind}:{self.ref_id}"
        return str(uuid.uuid5(_DELIVERY_NAMESPACE, name))


def enqueue(conn: Connection, kind: str, ref_id: str, payload: str, now_ms: int) -> None:
    """Add a pending entry, due now, in the caller's transaction: it exists exactly if that commits."""
    enqueue_many(conn, [(kind, ref_id, payload)], now_ms)


def enqueue_many(conn: Connection, entries: Sequence[tuple[str, str, str]], now_ms: int) -> None:
    """Add pending entries, each (kind, ref_id, payload), due now, in one statement of the caller's
    transaction."""
    if not entries:
        return
    conn.execute(
        outbox.insert(),
        [
            {
                "kind": kind,
                "ref_id": ref_id,
                "payload": payload,
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_ms": now_ms,
                "created_ms": now_ms,
            }
            for kind, ref_id, payload in entries
        ],
    )


def claim_due(conn: Connection, kind: str, now_ms: int, lease_ms: int, limit: int) -> list[OutboxEntry]:
    """Take up to ``limit`` due entries of ``kind``, oldest due first, counting the attempt and pushing each
    into the future by the lease while it is worked on. Entries locked by another worker are passed over."""
    o = outbox.c
    query = (
        select(o.outbox_id, o.kind, o.ref_id, o.payload, o.attempts, o.created_ms)
        .where(o.status == OutboxStatus.PENDING.value, o.kind == kind, o.next_attempt_ms <= now_ms)
        .order_by(o.next_attempt_ms, o.outbox_id)
        .limit(limit)
    )
    rows = list(conn.execute(claim_lock(query, conn)))
    if rows:
        conn.execute(
            update(outbox)
            .where(o.outbox_id.in_([row.outbox_id for row in rows]))
            .values(next_attempt_ms=now_ms + lease_ms, attempts=o.attempts + 1)
        )
    return [
        OutboxEntry(row.outbox_id, row.kind, row.ref_id, row.payload, row.attempts + 1, row.created_ms)
        for row in rows
    ]


def reschedule(conn: Connection, outbox_id: int, error: str, next_attempt_ms: int) -> None:
    """A failed attempt: the entry stays pending and comes due again at ``next_attempt_ms``."""
    conn.execute(
        update(outbox)
        .where(outbox.c.outbox_id == outbox_id, outbox.c.status == OutboxStatus.PENDING.value)
        .values(next_attempt_ms=next_attempt_ms, last_error=error)
    )


def release(conn: Connection, outbox_ids: Sequence[int], now_ms: int) -> None:
    """Hand back claimed entries that were not tried: due again now, their claimed attempt uncounted."""
    if not outbox_ids:
        return
    o = outbox.c
    conn.execute(
        update(outbox)
        .where(o.outbox_id.in_(list(outbox_ids)), o.status == OutboxStatus.PENDING.value)
        .values(next_attempt_ms=now_ms, attempts=o.attempts - 1)
    )


def settle(conn: Connection, outbox_id: int, status: OutboxStatus, now_ms: int, note: str | None) -> bool:
    """End a pending entry: delivered, skipped or dead (``note`` says why, for the last two). Returns
    False when it had already been settled (by a worker that took it over after a lease ran out)."""
    if status not in SETTLED:
        raise ValueError(f"{status!r} does not settle an entry")
    row = conn.execute(
        update(outbox)
        .where(outbox.c.outbox_id == outbox_id, outbox.c.status == OutboxStatus.PENDING.value)
        .values(status=status.value, finished_ms=now_ms, last_error=note)
        .returning(outbox.c.outbox_id)
    ).first()
    return row is not None
