"""A running job's heartbeat (SPEC 19): the lease of a live run is renewed, so nobody takes it over.

While a run's body works, a thread of its own pushes the run's lease to ``now + lease`` every third of a
lease of clock time. It wakes every ``poll_s`` real seconds to read the clock, so it follows an injected
clock (a test's FakeClock) as well as the system's. A renewal that finds the run no longer this worker's
(it was reaped as crashed) logs ``lease_lost`` and stops; the run's finish is then refused by the store.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from voicemon.clock import Clock
from voicemon.domain.records import RunRecord
from voicemon.errors import StorageError
from voicemon.storage import Database
from voicemon.storage import jobs as job_store

logger = logging.getLogger(__name__)


class Heartbeat:
    """Renews ``record``'s lease while the ``with`` block runs; the thread is joined on exit.

    >>> with Heartbeat(db, clock, record, lease_ms=900_000, poll_s=5.0):  # doctest: +SKIP
    ...     job.run(record.target_ms)
    """

    def __init__(
        self, db: Database, clock: Clock, record: RunRecord, *, lease_ms: int, poll_s: float
    ) -> None:
        if record.owner is None:
            raise ValueError("only a claimed run has a lease to renew")
        self._db = db
        self._clock = clock
        self._run_id = record.run_id
        self._name = record.name
        self._owner = record.owner
        self._lease_ms = lease_ms
        self._every_ms = lease_ms // 3
        # The clock time the stored lease was last set from (claim or renewal).
        self._renewed_ms = record.started_ms if record.started_ms is not None else clock.now_ms()
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"voicemon-lease-{record.name}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._stop.set()
        # Joined before the run is finished: a renewal after the finish would read as a lost run.
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            now_ms = self._clock.now_ms()
            if now_ms - self._renewed_ms < self._every_ms:
                continue
            try:
                with self._db.write() as conn:
                    held = job_store.renew_lease(conn, self._run_id, self._owner, now_ms + self._lease_ms)
            except StorageError:
                # Two thirds of the lease are left: try again at the next wake.
                logger.warning(
                    "lease renewal failed",
                    exc_info=True,
                    extra={"action": "lease_renewal_failed", "job": self._name, "run_id": self._run_id},
                )
                continue
            if not held:
                logger.warning(
                    "run lost: it was taken as crashed while it still ran",
                    extra={"action": "lease_lost", "job": self._name, "run_id": self._run_id},
                )
                return
            self._renewed_ms = now_ms
            logger.debug(
                "lease renewed",
                extra={
                    "action": "lease_renewed",
                    "job": self._name,
                    "run_id": self._run_id,
                    "now_ms": now_ms,
                },
            )
