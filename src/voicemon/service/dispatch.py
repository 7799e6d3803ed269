"""The outbox dispatcher (SPEC 15): delivers every kind of outbox entry after commit, each kind in a lane.

    Dispatcher ── a lane per registered kind ── kind.deliver(entry) ──> a Transport
                                                kind.give_up(conn, entry, error, now_ms)

Delivery is at least once: an entry is settled only after its kind's ``deliver`` returned, and an entry
whose worker died comes due again when its lease runs out. A failed attempt backs off exponentially with
jitter, by the kind's own :class:`DeliveryPolicy`; after its last attempt the entry is dead, and the
kind's ``give_up`` records what that means in the transaction that marks it dead.

Each lane claims and delivers only its own kind's entries, in a thread of its own once started: a kind
whose receiver hangs until its timeout, or always fails, holds up nothing but its own entries. An entry of
a kind nobody registered is never claimed and never decoded: it waits, pending, for a process that knows
its kind (in a rolling deploy, newer servers may write kinds that older ones do not know).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.retries import backoff_ms
from voicemon.storage import Database
from voicemon.storage import outbox as outbox_store
from voicemon.storage.outbox import OutboxEntry, OutboxStatus

logger = logging.getLogger(__name__)

# Entries one lane claims at a time. The lease covers the whole batch, so a batch must be deliverable
# within it even when every attempt takes its full timeout (10 times 5 s against the default 60 s).
CLAIM_BATCH = 10


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard one kind tries: attempts in all, and the backoff between them (full jitter, in ms)."""

    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int

    def wait_ms(self, attempt: int, rng: random.Random) -> int:
        """The wait after failed attempt number ``attempt`` (1 for the first)."""
        return backoff_ms(attempt, self.backoff_base_ms, self.backoff_cap_ms, rng)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt that raised nothing ended: ``delivered``, or ``skipped`` with a note saying why.
    ``record`` runs in the transaction that settles the entry, given that transaction's time in ms."""

    status: OutboxStatus
    note: str | None = None
    record: Callable[[Connection, int], None] | None = None


def delivered(record: Callable[[Connection, int], None] | None = None) -> Outcome:
    return Outcome(OutboxStatus.DELIVERED, None, record)


def skipped(reason: str) -> Outcome:
    """Nothing to deliver any more (what the entry was about has ended without it)."""
    return Outcome(OutboxStatus.SKIPPED, reason)


class DeliveryKind(Protocol):
    """How the entries of one kind are delivered, and what giving up on one means."""

    @property
    def policy(self) -> DeliveryPolicy: ...

    def deliver(self, entry: OutboxEntry) -> Outcome:
        """Send the entry through the transport, or decide there is nothing to send. Raising (usually
        :class:`~voicemon.errors.DeliveryError`) fails this attempt."""
        ...

    def give_up(self, conn: Connection, entry: OutboxEntry, error: str, now_ms: int) -> None:
        """Record that the entry is undeliverable (``error``: the last attempt's), in ``conn``'s
        transaction, which also marks the entry dead."""
        ...


class _Lane:
    """One kind's claims and deliveries; run by a thread of its own once the dispatcher starts."""

    def __init__(
        self,
        kind: str,
        handler: DeliveryKind,
        db: Database,
        clock: Clock,
        lease_ms: int,
        rng: random.Random,
        stop: threading.Event,
        observe: Callable[[str, str], None],
    ) -> None:
        self.kind = kind
        self._observe = observe
        self.handler = handler
        self._db = db
        self._clock = clock
        self._lease_ms = lease_ms
        self._rng = rng
        self._stop = stop
        self.woken = threading.Event()
        self.thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Claim this kind's due entries and try each once; returns how many were tried."""
        with self._db.write() as conn:
            entries = outbox_store.claim_due(
                conn, self.kind, self._clock.now_ms(), self._lease_ms, CLAIM_BATCH
            )
        for tried, entry in enumerate(entries):
            if self._stop.is_set():
                # Stopping: hand the untried rest back, due now, so that another worker (or this one
                # after a restart) need not wait for the lease to run out.
                with self._db.write() as conn:
                    outbox_store.release(conn, [e.outbox_id for e in entries[tried:]], self._clock.now_ms())
                return tried
            self._attempt(entry)
        return len(entries)

    def loop(self, poll_s: float) -> None:
        while not self._stop.is_set():
            try:
                tried = self.run_once()
            except Exception:
                logger.exception("outbox pass failed", extra={"action": "dispatch_failed", "kind": self.kind})
                tried = 0
            if tried == 0:
                self.woken.wait(poll_s)
                self.woken.clear()

    def _attempt(self, entry: OutboxEntry) -> None:
        try:
            outcome = self.handler.deliver(entry)
        except Exception as exc:
            self._failed(entry, f"{exc}" or exc.__class__.__name__)
            return
        now_ms = self._clock.now_ms()
        with self._db.write() as conn:
            # Not settled here when another worker took the entry over after its lease ran out and
            # settled it first: its record stands.
            settled = outbox_store.settle(conn, entry.outbox_id, outcome.status, now_ms, outcome.note)
            if settled and outcome.record is not None:
                outcome.record(conn, now_ms)
        self._observe(self.kind, outcome.status.value)
        logger.info(
            "outbox entry settled",
            extra={"action": f"outbox_{outcome.status.value}", **_describe(entry)},
        )

    def _failed(self, entry: OutboxEntry, error: str) -> None:
        policy = self.handler.policy
        now_ms = self._clock.now_ms()
        if entry.attempts < policy.max_attempts:
            wait_ms = policy.wait_ms(entry.attempts, self._rng)
            with self._db.write() as conn:
                outbox_store.reschedule(conn, entry.outbox_id, error, now_ms + wait_ms)
            self._observe(self.kind, "failed")
            logger.warning(
                "outbox delivery failed, will try again",
                extra={
                    "action": "outbox_attempt_failed",
                    "error": error,
                    "wait_ms": wait_ms,
                    **_describe(entry),
                },
            )
            return
        with self._db.write() as conn:
            if outbox_store.settle(conn, entry.outbox_id, OutboxStatus.DEAD, now_ms, error):
                self.handler.give_up(conn, entry, error, now_ms)
        self._observe(self.kind, OutboxStatus.DEAD.value)
        logger.error(
            "outbox entry undeliverable, given up",
            extra={"action": "outbox_dead", "error": error, **_describe(entry)},
        )


def _describe(entry: OutboxEntry) -> dict[str, object]:
    return {
        "kind": entry.kind,
        "outbox_id": entry.outbox_id,
        "ref_id": entry.ref_id,
        "attempt": entry.attempts,
        "delivery_id": entry.delivery_id,
    }


class Dispatcher:
    """Delivers due outbox entries, a lane per registered kind.

    ``run_once`` is one pass of every lane in turn, in the caller's thread (tests drive it with a fake
    clock); ``start`` gives each lane a thread of its own, woken early by :meth:`wake` after a commit
    that wrote an entry. Register kinds before or after ``start``; a kind is registered once.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        lease_ms: int,
        poll_s: float,
        rng: random.Random | None = None,
        observe: Callable[[str, str], None] = lambda kind, outcome: None,
    ) -> None:
        """``observe(kind, outcome)`` hears of every attempt's outcome (delivered, skipped, failed, dead)."""
        self._observe = observe
        self._db = db
        self._clock = clock
        self._lease_ms = lease_ms
        self._poll_s = poll_s
        self._rng = rng or random.Random()
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = False

    def register(self, kind: str, handler: DeliveryKind) -> None:
        """Deliver entries of ``kind`` with ``handler``; raises ValueError if the kind has one already."""
        with self._lock:
            if kind in self._lanes:
                raise ValueError(f"outbox kind {kind!r} is registered already")
            # Each lane jitters with its own generator, drawn from ours: deterministic when ours is seeded.
            lane = _Lane(
                kind,
                handler,
                self._db,
                self._clock,
                self._lease_ms,
                random.Random(self._rng.getrandbits(64)),
                self._stop,
                self._observe,
            )
            self._lanes[kind] = lane
            if self._running:
                self._start_lane(lane)

    def wake(self) -> None:
        """Look for due entries now rather than at the next poll (call after committing an entry)."""
        for lane in self._snapshot():
            lane.woken.set()

    def run_once(self) -> int:
        """One pass: each lane claims its due entries and tries each once; returns how many were tried."""
        return sum(lane.run_once() for lane in self._snapshot())

    def flush(self) -> int:
        """Pass after pass until one tries nothing (entries backing off are not due); returns the tries."""
        total = 0
        while tried := self.run_once():
            total += tried
        return total

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._stop.clear()
            self._running = True
            for lane in self._lanes.values():
                self._start_lane(lane)

    def stop(self) -> None:
        """Stop every lane after the delivery it is in (a hanging receiver: after its timeout)."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._stop.set()
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.woken.set()
        for lane in lanes:
            if lane.thread is not None:
                lane.thread.join()
                lane.thread = None
        self._stop.clear()

    def _start_lane(self, lane: _Lane) -> None:
        lane.thread = threading.Thread(
            target=lane.loop, args=(self._poll_s,), name=f"voicemon-outbox-{lane.kind}", daemon=True
        )
        lane.thread.start()

    def _snapshot(self) -> list[_Lane]:
        with self._lock:
            return list(self._lanes.values())
