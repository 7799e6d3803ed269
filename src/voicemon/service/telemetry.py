"""``/metrics`` (SPEC 17): what this process did, and what the database says, for Prometheus.

Two kinds of families, as Prometheus' own guidance has it:

- **Process families**, counters and histograms of what this replica did (events given to it by type and
  outcome, HTTP request durations by route, ingest commit durations, stage durations of the events it
  accepted, outbox deliveries, job runs). Each replica counts its own; Prometheus sums them.
- **State families**, read from the database at scrape time by a collector (active and stuck artifacts,
  open alerts by severity, each job's last success, how far hourly aggregation has got), cached for at
  most :data:`STATE_CACHE_S` so that many scrapers cost one read; their HELP says so.

Each :class:`Telemetry` has a registry of its own (never the global one), so two apps in one process,
as in the tests, never share or double their counts.

Stage duration buckets run from 100 ms to 10 min: the stages of a voice-note pipeline take seconds
(transcription and drafting a few, entity resolution under one), with a long tail into minutes when a
provider is slow. The bounds are about doubling, so a p95 estimated from them is within a factor of two;
the exact percentiles are in the snapshots.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from voicemon.clock import Clock
from voicemon.domain.access import READERS, Principal, require_role
from voicemon.domain.events import Event
from voicemon.domain.model import ACTIVE_STATUSES, EventType
from voicemon.domain.timeutil import HOUR_MS
from voicemon.errors import ForbiddenError
from voicemon.service.ingest import Rejection
from voicemon.storage import Database
from voicemon.storage.state import State, read_state

STATE_CACHE_S = 10.0
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own switch to its multiprocess mode; read when it is first imported."""
# With organization labels on, the per-organization families name at most this many: the busiest.
MAX_LABELLED_ORGANIZATIONS = 100
STAGE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_KNOWN_TYPES = frozenset(t.value for t in EventType)


class Telemetry:
    def __init__(self, db: Database, clock: Clock, stuck_after_ms: int, org_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "voicemon_events",
            "Events given to this process, by event type and outcome (accepted, duplicate, rejected)",
            ["event_type", "outcome"],
            registry=r,
        )
        self.ingest_commit = Histogram(
            "voicemon_ingest_commit_duration_seconds",
            "Time from a batch's arrival at the writer to its commit",
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.stage_duration = Histogram(
            "voicemon_stage_duration_seconds",
            "Durations of the stage completions and failures this process accepted, by stage",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self.http = Histogram(
            "voicemon_http_request_duration_seconds",
            "HTTP requests this process answered, by route template, method and status",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.deliveries = Counter(
            "voicemon_outbox_deliveries",
            "Outbox delivery attempts this process made, by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_runs = Counter(
            "voicemon_job_runs",
            "Job runs this process finished, by job and status",
            ["job", "status"],
            registry=r,
        )
        self.otlp_spans = Counter(
            "voicemon_otlp_spans",
            "OTLP spans given to this process, by outcome (accepted; rejected: meant for voicemon but mapped"
            " to no valid event; ignored: no voicemon attribute or stage name)",
            ["outcome"],
            registry=r,
        )
        self.exports = Counter(
            "voicemon_exports",
            "Export files this process streamed, by kind, format and outcome (completed, aborted)",
            ["kind", "format", "outcome"],
            registry=r,
        )
        self.export_rows = Counter(
            "voicemon_export_rows",
            "Rows this process wrote into export files, by kind",
            ["kind"],
            registry=r,
        )
        self._state = StateCollector(
            db, clock, stuck_after_ms, MAX_LABELLED_ORGANIZATIONS if org_labels else 0
        )
        r.register(self._state)
        # ``serve --workers`` (decision 0034): every worker process writes its process families to files in
        # prometheus_client's multiprocess folder, and a scrape, whichever process answers it, sums them
        # over all of them (a restarted worker's predecessor included, so counters never go back).
        self._exposed = r
        if os.environ.get(MULTIPROCESS_ENV):
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed)  # type: ignore[no-untyped-call]
            self._exposed.register(self._state)

    # --- what the process did ---------------------------------------------------------------------------

    def ingested(
        self,
        valid: Sequence[Event],
        inserted: Collection[str],
        items: Sequence[object],
        rejected: Iterable[Rejection],
    ) -> None:
        """Count one ingest call: each valid event accepted (newly stored) or a duplicate, each rejected
        item by the event type it named ("unknown" unless it is a known type: a label value never comes
        straight from a client), and the stage durations of the accepted ones."""
        counts: dict[tuple[str, str], int] = {}
        for e in valid:
            outcome = "accepted" if e.event_id in inserted else "duplicate"
            key = (e.event_type.value, outcome)
            counts[key] = counts.get(key, 0) + 1
            if outcome == "accepted" and e.duration_ms is not None and e.pipeline_stage is not None:
                self.stage_duration.labels(e.pipeline_stage.value).observe(e.duration_ms / 1000)
        for r in rejected:
            item = items[r.index] if 0 <= r.index < len(items) else None
            named = item.get("event_type") if isinstance(item, dict) else None
            event_type = named if isinstance(named, str) and named in _KNOWN_TYPES else "unknown"
            counts[(event_type, "rejected")] = counts.get((event_type, "rejected"), 0) + 1
        for (event_type, outcome), n in counts.items():
            self.events.labels(event_type, outcome).inc(n)

    # --- the scrape ---------------------------------------------------------------------------------------

    def scrape(self, principal: Principal | None) -> bytes:
        """The text exposition. ``principal``: the caller, a viewer or staff key of no organization (None
        when ``/metrics`` is public)."""
        if principal is not None:
            require_role(principal, *READERS)
            if principal.organization_id is not None:
                raise ForbiddenError(
                    "/metrics is platform-wide: use a key of no organization", code="forbidden_organization"
                )
        return generate_latest(self._exposed)


class StateCollector(Collector):
    """The state families, read in one transaction at most once per :data:`STATE_CACHE_S`."""

    def __init__(self, db: Database, clock: Clock, stuck_after_ms: int, organizations: int) -> None:
        self._db = db
        self._clock = clock
        self._stuck_after_ms = stuck_after_ms
        self._organizations = organizations
        self._lock = threading.Lock()
        self._cached: tuple[float, State] | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time only, never at registration

    def _state(self) -> State:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < STATE_CACHE_S:
                return self._cached[1]
            now_ms = self._clock.now_ms()
            with self._db.read() as conn, conn.begin():
                state = read_state(conn, now_ms - self._stuck_after_ms, HOUR_MS, self._organizations)
            self._cached = (now, state)
            return state

    def collect(self) -> Iterator[Metric]:
        s = self._state()
        cached = f" (read from the database at most every {STATE_CACHE_S:g} s)"
        active = GaugeMetricFamily(
            "voicemon_artifacts_active",
            "Artifacts not yet completed or failed, by status" + cached,
            labels=["status"],
        )
        for status in ACTIVE_STATUSES:
            active.add_metric([status.value], s.active.get(status.value, 0))
        yield active
        yield GaugeMetricFamily(
            "voicemon_artifacts_stuck",
            "Active artifacts with no event for longer than the stuck threshold" + cached,
            value=s.stuck,
        )
        alerts = GaugeMetricFamily(
            "voicemon_alerts_open",
            "Open alerts (firing or acknowledged), by severity" + cached,
            labels=["severity"],
        )
        for severity in ("low", "medium", "high", "critical"):
            alerts.add_metric([severity], s.open_alerts.get(severity, 0))
        yield alerts
        jobs = GaugeMetricFamily(
            "voicemon_job_last_success_timestamp_seconds",
            "When each job's newest successful run finished, as Unix time" + cached,
            labels=["job"],
        )
        for job, at in sorted(s.last_success_ms.items()):
            jobs.add_metric([job], at / 1000)
        yield jobs
        if s.by_organization is not None:
            top = (
                f" (the {self._organizations} with the most;"
                f" read from the database at most every {STATE_CACHE_S:g} s)"
            )
            active_org = GaugeMetricFamily(
                "voicemon_organization_artifacts_active",
                "Active artifacts per organization" + top,
                labels=["organization_id"],
            )
            stuck_org = GaugeMetricFamily(
                "voicemon_organization_artifacts_stuck",
                "Stuck artifacts per organization" + top,
                labels=["organization_id"],
            )
            for org, (n_active, n_stuck) in sorted(s.by_organization.items()):
                active_org.add_metric([org], n_active)
                stuck_org.add_metric([org], n_stuck)
            yield active_org
            yield stuck_org
        if s.alerts_by_organization is not None:
            alerts_org = GaugeMetricFamily(
                "voicemon_organization_alerts_open",
                f"Open alerts per organization (the {self._organizations} with the most"
                + cached.removeprefix(" ("),
                labels=["organization_id"],
            )
            for org, n in sorted(s.alerts_by_organization.items()):
                alerts_org.add_metric([org], n)
            yield alerts_org
        if s.hourly_through_ms is not None:
            yield GaugeMetricFamily(
                "voicemon_hourly_data_through_timestamp_seconds",
                "The end of the newest aggregated hour, as Unix time" + cached,
                value=s.hourly_through_ms / 1000,
            )


def route_of(scope: dict[str, Any]) -> str:
    """The route template of a request (``/v1/artifacts/{artifact_id}``), never its concrete path, so
    that label values stay few; ``unmatched`` for a path no route has."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
