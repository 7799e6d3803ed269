"""Read use cases: events, artifacts, realtime counters. Each reads with a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from voicemon.clock import Clock
from voicemon.domain.access import READERS, Principal, aggregate_scope, require_role, visible_organization
from voicemon.domain.artifacts import ArtifactState, choose_artifact
from voicemon.domain.counters import PLATFORM_SCOPE
from voicemon.domain.cursor import decode_cursor, encode_cursor
from voicemon.domain.rates import failure_rate
from voicemon.domain.records import EventFilter, StoredEvent
from voicemon.domain.retries import Retry
from voicemon.domain.timeutil import MINUTE_MS, floor_to
from voicemon.storage import Database
from voicemon.storage import alerts as alert_store
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import counters as counter_store
from voicemon.storage import events as event_store
from voicemon.storage import retries as retry_store
from voicemon.storage.artifacts import ArtifactFilter

REALTIME_WINDOW_MINUTES = 60

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ArtifactDetail:
    """An artifact as of one moment: its summary, timeline and retries come from one read, so a retry
    shown as ended always comes with the status its ending event gave."""

    summary: ArtifactState
    stuck: bool
    timeline: list[StoredEvent]
    retries: list[Retry]


@dataclass(frozen=True, slots=True)
class Realtime:
    window_start_ms: int
    window_end_ms: int
    organization_id: str | None
    counts: dict[str, int]
    failure_rate: float


class Queries:
    def __init__(self, db: Database, clock: Clock, stuck_after_ms: int) -> None:
        self._db = db
        self._clock = clock
        self._stuck_after_ms = stuck_after_ms

    def list_events(
        self, principal: Principal, f: EventFilter, cursor: str | None, limit: int
    ) -> Page[StoredEvent]:
        """Newest first. ``cursor`` must be one this list returned for the same filter (the caller's
        organization filled in), else :class:`~voicemon.errors.BadRequest` (``invalid_cursor``)."""
        require_role(principal, *READERS)
        org = visible_organization(principal, f.organization_id)
        f = EventFilter(f.event_type, f.pipeline_stage, org, f.artifact_id, f.start_ms, f.end_ms)
        scope = (f.event_type, f.pipeline_stage, f.organization_id, f.artifact_id, f.start_ms, f.end_ms)
        after = decode_cursor(cursor, "ev", scope, int, int) if cursor else None
        with self._db.read() as conn:
            rows = event_store.list_events(conn, f, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        next_cursor = (
            encode_cursor("ev", scope, (last.event.timestamp_ms, last.seq)) if more and last else None
        )
        return Page(rows, next_cursor)

    def list_artifacts(
        self,
        principal: Principal,
        status: str | None,
        organization_id: str | None,
        cursor: str | None,
        limit: int,
        failed_stage: str | None = None,
    ) -> Page[tuple[ArtifactState, bool]]:
        """Newest received first, each artifact with whether it is stuck; ``failed_stage`` keeps those
        whose last failure was in that stage. A cursor goes on at the list version its first page read
        (see :func:`voicemon.storage.artifacts.list_artifacts`); it must be one this list returned for the
        same filter, else :class:`~voicemon.errors.BadRequest`."""
        require_role(principal, *READERS)
        org = visible_organization(principal, organization_id)
        now_ms = self._clock.now_ms()
        f = ArtifactFilter(status, org, now_ms - self._stuck_after_ms, failed_stage)
        # "stuck" is judged at each page's own time; the filter is the status, the organization and
        # the failed stage (a first page's cursor, from before this filter, still names the same list).
        scope = (status, org) if failed_stage is None else (status, org, failed_stage)
        after = decode_cursor(cursor, "art", scope, int, int, str, str) if cursor else None
        with self._db.read() as conn:
            page = artifact_store.list_artifacts(conn, f, after, limit + 1)
        more = len(page.rows) > limit
        rows = page.rows[:limit]
        items = [(r.state, r.state.is_stuck(now_ms, self._stuck_after_ms)) for r in rows]
        last = rows[-1] if rows else None
        next_cursor = (
            encode_cursor(
                "art", scope, (page.version, last.place_ms, last.state.artifact_id, last.state.key[0])
            )
            if more and last
            else None
        )
        return Page(items, next_cursor)

    def artifact(
        self, principal: Principal, artifact_id: str, organization_id: str | None = None
    ) -> ArtifactDetail:
        """One artifact, named by its id and (when several organizations use the id) its organization."""
        require_role(principal, *READERS)
        with self._db.read() as conn:
            found = artifact_store.find_artifacts(conn, artifact_id)
            state = choose_artifact(principal, artifact_id, organization_id, found)
            timeline = event_store.timeline(conn, state.key)
            retries = retry_store.list_for(conn, state.key)
        stuck = state.is_stuck(self._clock.now_ms(), self._stuck_after_ms)
        return ArtifactDetail(state, stuck, timeline, retries)

    def active_and_stuck(self, principal: Principal, organization_id: str | None) -> tuple[int, int]:
        """How many artifacts are active now, and how many of those are stuck: of one organization, or of
        the platform (every organization and those without one) when none is named. One grouped read.
        An aggregate like the realtime counters: a scoped key names its own organization."""
        require_role(principal, *READERS)
        org = aggregate_scope(principal, organization_id)
        with self._db.read() as conn:
            counts = alert_store.artifact_counts(conn, self._clock.now_ms() - self._stuck_after_ms)
        if org is not None:
            return counts.get(org, (0, 0))
        return sum(a for a, _ in counts.values()), sum(s for _, s in counts.values())

    def realtime(self, principal: Principal, organization_id: str | None) -> Realtime:
        """Counters of the 60 minutes ending now: the current minute and the 59 before it."""
        require_role(principal, *READERS)
        org = aggregate_scope(principal, organization_id)
        now_ms = self._clock.now_ms()
        last_minute = floor_to(now_ms, MINUTE_MS)
        first_minute = last_minute - (REALTIME_WINDOW_MINUTES - 1) * MINUTE_MS
        with self._db.read() as conn:
            sums = counter_store.window_sums(conn, org or PLATFORM_SCOPE, first_minute, last_minute)
        return Realtime(
            window_start_ms=first_minute,
            window_end_ms=now_ms,
            organization_id=org,
            counts=sums,
            failure_rate=failure_rate(sums["artifacts_completed"], sums["artifacts_failed"]),
        )
