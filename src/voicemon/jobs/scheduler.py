"""The scheduler thread: calls :meth:`JobRunner.tick` now and then, and never in a tight loop. The runs a
tick starts go on in the runner's lanes; the scheduler only starts them."""

from __future__ import annotations

import logging
import threading

from voicemon.jobs.runner import JobRunner

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, runner: JobRunner, poll_s: float) -> None:
        self._runner = runner
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="voicemon-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop ticking, then wait for the runs in flight to end (so none outlives the database)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._runner.flush()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._runner.tick()
            except Exception:
                # A broken database must not turn into a busy loop: wait for the next poll.
                logger.exception("scheduler tick failed", extra={"action": "scheduler_tick_failed"})
            self._stop.wait(self._poll_s)
