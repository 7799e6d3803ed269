"""Group commit: one thread owns all ingest writes and commits the events of concurrent requests together.

SQLite allows one writer at a time anyway, and a synchronous database call inside an async endpoint would
stall the event loop. Requests hand their validated events to :meth:`GroupCommitWriter.submit` and wait on
the returned future, which resolves only after the transaction holding their events has committed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from voicemon.clock import Clock
from voicemon.domain.events import Event
from voicemon.errors import IntegrityConflict, StorageError
from voicemon.service.ingest import store_events
from voicemon.storage import Database

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5


@dataclass(slots=True)
class _Job:
    events: Sequence[Event]
    future: Future[set[str]]


_STOP = object()


class GroupCommitWriter:
    """Start it, submit batches, stop it. ``submit`` is thread-safe and never blocks on the database."""

    def __init__(self, db: Database, clock: Clock, *, max_events: int = 5000) -> None:
        self._db = db
        self._clock = clock
        self._max_events = max_events
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Only the writer thread uses it.
        self._connection = db.kept_connection()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="voicemon-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Commit everything already submitted, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
            self._connection.close()

    def submit(self, events: Sequence[Event]) -> Future[set[str]]:
        """Queue events for the next commit; the future gives the ids this request newly stored."""
        future: Future[set[str]] = Future()
        if not events:
            future.set_result(set())
            return future
        if self._thread is None:
            future.set_exception(StorageError("the ingest writer is not running"))
            return future
        self._queue.put(_Job(events, future))
        return future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Job)
            group = [first]
            size = len(first.events)
            while size < self._max_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Job)
                group.append(item)
                size += len(item.events)
            self._commit_group(group)

    def _commit_group(self, group: list[_Job]) -> None:
        try:
            inserted = self._write([e for job in group for e in job.events])
        except Exception as exc:
            if len(group) == 1:
                logger.exception("ingest commit failed", extra={"action": "ingest_commit_failed"})
                group[0].future.set_exception(_as_storage_error(exc))
                return
            # One request must not sink the others: commit each on its own.
            for job in group:
                self._commit_group([job])
            return
        claimed: set[str] = set()
        for job in group:
            mine = {e.event_id for e in job.events if e.event_id in inserted and e.event_id not in claimed}
            claimed |= mine
            job.future.set_result(mine)

    def _write(self, events: Sequence[Event]) -> set[str]:
        conflicts = 0
        fresh_connection = False
        while True:
            try:
                with self._connection.write(pipelined=True) as conn:
                    return store_events(conn, events, self._clock.now_ms())
            except IntegrityConflict:
                conflicts += 1
                if conflicts == MAX_CONFLICT_RETRIES:
                    raise StorageError("events kept being stored concurrently; try again") from None
                logger.info(
                    "ingest conflict, redoing",
                    extra={"action": "ingest_conflict_retry", "attempt": conflicts},
                )
            except StorageError:
                # The kept connection may have been closed while idle (a database restart or failover):
                # the transaction is tried once more, on a fresh connection.
                if fresh_connection:
                    raise
                fresh_connection = True


def _as_storage_error(exc: Exception) -> Exception:
    return exc if isinstance(exc, StorageError) else StorageError(f"ingest failed: {exc}")
