"""Export use cases (SPEC 17): the rows of a list or range query, for a file of any size.

Each use case checks its caller and its filters when it is called, exactly as the list or range query it
mirrors does, so a refusal comes before the first byte of a file. Its rows are read when they are
iterated, in one read (one moment of the database: an export never shows an artifact twice because it
moved meanwhile), from a server-side cursor: memory stays flat whatever the count. Events and artifacts
come oldest first; snapshot history oldest period first; organizations as the breakdown orders them.
A failure while rows are read raises :class:`~voicemon.errors.StorageError` from the iteration, and the
file must then be abandoned, never ended as if whole.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import starmap

from voicemon.clock import Clock
from voicemon.domain.access import READERS, Principal, require_role, visible_organization
from voicemon.domain.exports import (
    EVENT_SOURCE,
    ExportFormat,
    ExportKind,
    Row,
    artifact_cells,
    encode,
    event_cells,
    history_cells,
    org_cells,
)
from voicemon.domain.periods import Period
from voicemon.domain.records import EventFilter
from voicemon.service.metrics import MetricsQueries, Range
from voicemon.storage import Database
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import events as event_store
from voicemon.storage.artifacts import ArtifactFilter


@dataclass(frozen=True, slots=True)
class Export:
    """One export, allowed and planned; nothing is read until :meth:`rows` or :meth:`chunks` is
    iterated, and every iteration reads anew."""

    kind: ExportKind
    _rows: Callable[[], Iterator[Row]]
    _count: Callable[[], int]

    def rows(self) -> Iterator[Row]:
        return self._rows()

    def count(self) -> int:
        """How many rows an iteration started now would give (for a progress bar: rows may arrive
        between this count and the read)."""
        return self._count()

    def chunks(
        self, fmt: ExportFormat, counted: Callable[[int], None] | None = None
    ) -> Generator[bytes, None, None]:
        """The file in ``fmt``, in pieces; ``counted`` is told how many rows each piece holds."""
        return encode(fmt, self.kind, self.rows(), counted)


class Exports:
    def __init__(self, db: Database, clock: Clock, stuck_after_ms: int, metrics: MetricsQueries) -> None:
        self._db = db
        self._clock = clock
        self._stuck_after_ms = stuck_after_ms
        self._metrics = metrics

    def events(self, principal: Principal, f: EventFilter) -> Export:
        """The events of the event list's filter (SPEC 7), oldest first by timestamp then arrival."""
        require_role(principal, *READERS)
        org = visible_organization(principal, f.organization_id)
        f = EventFilter(f.event_type, f.pipeline_stage, org, f.artifact_id, f.start_ms, f.end_ms)

        def rows() -> Iterator[Row]:
            with self._db.read() as conn:
                yield from starmap(event_cells, event_store.stream_events(conn, f, EVENT_SOURCE))

        return Export(ExportKind.EVENTS, rows, lambda: self._count(lambda c: event_store.count_events(c, f)))

    def artifacts(
        self,
        principal: Principal,
        status: str | None,
        organization_id: str | None,
        failed_stage: str | None = None,
    ) -> Export:
        """The artifacts of the artifact list's filter, oldest listed first; ``stuck`` as of the read."""
        require_role(principal, *READERS)
        org = visible_organization(principal, organization_id)

        def the_filter(now_ms: int) -> ArtifactFilter:
            # "stuck" is judged at the moment of each read.
            return ArtifactFilter(status, org, now_ms - self._stuck_after_ms, failed_stage)

        def rows() -> Iterator[Row]:
            now_ms = self._clock.now_ms()
            with self._db.read() as conn:
                for state in artifact_store.stream_artifacts(conn, the_filter(now_ms)):
                    yield artifact_cells(state, state.is_stuck(now_ms, self._stuck_after_ms))

        def count() -> int:
            f = the_filter(self._clock.now_ms())
            return self._count(lambda c: artifact_store.count_artifacts(c, f))

        return Export(ExportKind.ARTIFACTS, rows, count)

    def history(self, principal: Principal, r: Range, organization_id: str | None) -> Export:
        """The rows of the snapshot history query, live periods marked. A range holds at most a few
        thousand rows (one a period): they are read now, with the query's own checks."""
        history = self._metrics.history(principal, r, organization_id)
        length = Period(r.period).length_ms
        cells = [
            history_cells(
                row.period_type,
                row.period_start_ms,
                row.period_start_ms + length,
                row.scope or None,
                row.computed_ms,
                row.period_start_ms in history.live,
                row.parts,
            )
            for row in history.rows
        ]
        return Export(ExportKind.HISTORY, lambda: iter(cells), lambda: len(cells))

    def orgs(self, principal: Principal, r: Range) -> Export:
        """The organization breakdown of a range (staff), one row an organization with events in it,
        read now with the breakdown's own checks."""
        items = self._metrics.by_organization(principal, r).items
        cells = [org_cells(i.organization_id, i.organization_name, i.parts) for i in items]
        return Export(ExportKind.ORGS, lambda: iter(cells), lambda: len(cells))

    def _count(self, read: Callable[..., int]) -> int:
        with self._db.read() as conn:
            return read(conn)
