"""The simulated pipeline: reports through the SDK, keeps derived data, and honours retries (SPEC 9, 11)."""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from voicemon.sim.model import (
    STAGE_TYPES,
    Incident,
    Journey,
    Org,
    SimConfig,
    incident_events,
    organizations,
    pick_org,
    plan_journey,
    stalled,
    under_incident,
)
from voicemon.sim.store import DerivedStore

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
COMPLETION_STAGE = {types[1]: stage for stage, types in STAGE_TYPES.items()}
COMPLETION_STAGE["entity_needs_disambiguation"] = "entity_resolution"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RetryNotHonoured(Exception):
    """The pipeline could not act on a retry command; nothing of it was done."""


@dataclass(frozen=True, slots=True)
class RetryOrder:
    """The part of a retry command the pipeline acts on."""

    retry_id: str
    artifact_id: str
    organization_id: str | None
    stage: str
    full_cleanup: bool

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RetryOrder:
        return cls(
            str(body["retry_id"]),
            str(body["artifact_id"]),
            body.get("organization_id"),
            str(body["stage"]),
            bool(body.get("full_cleanup")),
        )


class EventSink(Protocol):
    """Where the simulator's events go: the SDK's :class:`~voicemon.sdk.Client`, or
    :class:`~voicemon.sim.otlp.OtlpClient` for a pipeline that reports through OpenTelemetry."""

    def log_event(self, event_type: str, *, timestamp: int, **fields: Any) -> None: ...


class Simulator:
    """Many organizations' notes flowing through the six stages. Retried runs do not fail again
    (the simulated faults are transient), so a retry's outcome is predictable in the demo."""

    def __init__(
        self, client: EventSink, store: DerivedStore, config: SimConfig | None = None, seed: int | None = None
    ) -> None:
        self.client = client
        self.store = store
        self.config = config or SimConfig()
        self.orgs = organizations(self.config)
        self._org_by_id = {o.organization_id: o for o in self.orgs}
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._prefix = f"{self._rng.getrandbits(32):08x}"
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retries_seen: set[str] = set()
        self.retries_handled = 0
        # The incident in progress, for one organization, until a wall-clock time (None: until stopped).
        self._incident: tuple[Incident, Org, int | None] | None = None

    def _new_artifact_id(self) -> str:
        return f"note-{self._prefix}-{next(self._ids):06d}"

    # --- backfill -------------------------------------------------------------------------------------

    def backfill(
        self,
        hours: float,
        rate_per_hour: float,
        now_ms: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Emit ``hours`` of past traffic (ending now) at about ``rate_per_hour`` artifacts an hour;
        returns how many events were logged."""
        now = now_ms if now_ms is not None else wall_ms()
        total = max(1, int(hours * rate_per_hour))
        window = int(hours * HOUR_MS)
        logged = 0
        for i in range(total):
            # Busier in the (UTC) afternoon than at night.
            start = now - window + int(self._rng.random() * window)
            hour = (start // HOUR_MS) % 24
            if self._rng.random() > 0.45 + 0.55 * (1 if 8 <= hour <= 20 else 0):
                start = now - window + int(self._rng.random() * window)
            journey = plan_journey(
                self._new_artifact_id(), pick_org(self.orgs, self._rng), self._rng, self.config
            )
            for offset, event in journey.events:
                ts = start + int(offset)
                if ts > now:
                    break
                self._emit(event, ts, "initial")
                logged += 1
            if progress is not None:
                progress(i + 1, total)
        return logged

    # --- live -----------------------------------------------------------------------------------------

    def start_live(self, rate_per_min: float) -> None:
        """Start artifacts at about ``rate_per_min`` a minute (Poisson arrivals), in real time."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(rate_per_min,), name="voicemon-sim", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _schedule(self, due_ms: int, action: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (due_ms, next(self._seq), action))
            self._cv.notify_all()

    def _run(self, rate_per_min: float) -> None:
        next_arrival = wall_ms()
        while not self._stop.is_set():
            now = wall_ms()
            if now >= next_arrival:
                self._start_journey(now)
                next_arrival = now + int(self._rng.expovariate(rate_per_min / 60_000))
            due: list[Callable[[], None]] = []
            with self._cv:
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                wait_ms = min(next_arrival, self._heap[0][0] if self._heap else next_arrival) - now
                if not due:
                    self._cv.wait(max(0.0, min(wait_ms, 500)) / 1000)
            for action in due:
                try:
                    action()
                except Exception:
                    logger.exception("simulated step failed", extra={"action": "sim_step_failed"})

    def _start_journey(self, now: int) -> None:
        org = pick_org(self.orgs, self._rng)
        incident = self._incident_of(org, now)
        config = under_incident(self.config, incident)
        journey = plan_journey(self._new_artifact_id(), org, self._rng, config)
        if incident is Incident.STUCK_ARTIFACTS:
            journey = stalled(journey)
        self._play(journey, now, "initial")

    # --- incidents ------------------------------------------------------------------------------------

    def begin_incident(self, incident: Incident, organization_id: str, minutes: float | None = None) -> Org:
        """Produce ``incident`` for one organization from now on, for ``minutes`` (None: until stopped);
        its one-off events (a breaker opening, a budget exceeded) are sent now, and a breaker closes
        when the incident ends. Returns the organization."""
        org = self._org_by_id.get(organization_id)
        if org is None:
            known = ", ".join(o.organization_id for o in self.orgs)
            raise ValueError(f"no simulated organization {organization_id!r}; they are {known}")
        now = wall_ms()
        until = None if minutes is None else now + int(minutes * 60_000)
        self._incident = (incident, org, until)
        for event in incident_events(incident, org, ending=False):
            self._emit(event, now, "incident")
        if until is not None:
            self._schedule(until, functools.partial(self._end_incident, incident, org, until))
        return org

    def _end_incident(self, incident: Incident, org: Org, until: int) -> None:
        for event in incident_events(incident, org, ending=True):
            self._emit(event, until, "incident")

    def _incident_of(self, org: Org, now: int) -> Incident | None:
        if self._incident is None:
            return None
        incident, target, until = self._incident
        if target is not org or (until is not None and now >= until):
            return None
        return incident

    def _play(self, journey: Journey, start: int, run_id: str) -> None:
        for offset, event in journey.events:
            due = start + int(offset)
            self._schedule(due, functools.partial(self._emit, event, due, run_id))

    def _emit(self, event: dict[str, Any], ts: int, run_id: str) -> None:
        fields = dict(event)
        event_type = fields.pop("event_type")
        self.client.log_event(event_type, timestamp=ts, **fields)
        stage = COMPLETION_STAGE.get(event_type)
        if "artifact_id" not in fields:
            return  # a platform event (a breaker, a budget): no derived data
        if stage is not None:
            self.store.write(fields["artifact_id"], stage, run_id, _derived_rows(event))

    # --- retries --------------------------------------------------------------------------------------

    def handle_retry(self, order: RetryOrder) -> None:
        """Honour a retry command (at least once: a repeat of one retry_id is ignored). A full retry
        deletes all derived data of the artifact in one transaction first; if that fails, nothing runs
        and :class:`RetryNotHonoured` is raised, so the sender delivers the command again later."""
        with self._cv:
            if order.retry_id in self._retries_seen:
                return
            self._retries_seen.add(order.retry_id)
        if order.full_cleanup:
            try:
                self.store.delete_all(order.artifact_id)
            except Exception as exc:
                # Not honoured: forget the id, so that the next delivery of this command tries again.
                with self._cv:
                    self._retries_seen.discard(order.retry_id)
                logger.exception(
                    "cleanup before full retry failed; not retrying", extra={"action": "sim_cleanup_failed"}
                )
                raise RetryNotHonoured(f"cleanup of {order.artifact_id} before a full retry failed") from exc
        org = self._org_by_id.get(order.organization_id or "") or Org(
            order.organization_id or "unknown", "", 1.0
        )
        first = "transcription" if order.stage == "full" else order.stage
        journey = plan_journey(
            order.artifact_id, org, self._rng, self.config, from_stage=first, can_fail=False
        )
        self.retries_handled += 1
        self._play(journey, wall_ms(), order.retry_id)


def _derived_rows(event: dict[str, Any]) -> list[str]:
    meta = event.get("metadata") or {}
    count = meta.get("claim_count") or meta.get("entity_count") or meta.get("draft_count") or 1
    return [f"{event['event_type']} #{i + 1}" for i in range(int(count))]
