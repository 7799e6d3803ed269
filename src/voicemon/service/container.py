"""The service layer assembled: one object built from Settings, holding every use case and the writer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from voicemon.clock import Clock, SystemClock
from voicemon.domain.access import WRITERS, Principal, require_role
from voicemon.domain.otlp import Span
from voicemon.errors import ConflictError, StorageError
from voicemon.service.alert_delivery import AlertmanagerKind, Channel, NotificationKind, alert_channels
from voicemon.service.alertmanager import AlertmanagerClient
from voicemon.service.alerts import AlertService
from voicemon.service.dispatch import Dispatcher
from voicemon.service.exports import Exports
from voicemon.service.ingest import IngestResult, SpanResult, span_batch, validate_items
from voicemon.service.keys import KeyService
from voicemon.service.metrics import MetricsQueries
from voicemon.service.orgs import OrgService
from voicemon.service.partitions import EventPartitions
from voicemon.service.queries import Queries
from voicemon.service.retries import RetryService
from voicemon.service.retry_delivery import (
    RETRY_KIND,
    RetryDelivery,
    RetryHandler,
    WebhookHandler,
    handler_transport,
    retry_policy,
)
from voicemon.service.telemetry import Telemetry
from voicemon.service.transports import Transport
from voicemon.service.writer import GroupCommitWriter
from voicemon.settings import Settings
from voicemon.storage import Database, migrate
from voicemon.storage.migrate import SchemaState, Upgraded

logger = logging.getLogger(__name__)


class Services:
    """Build with settings (and, in tests, a clock); ``start`` migrates and starts the writer thread."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        db: Database | None = None,
        retry_transport: Transport | None = None,
        alert_transports: dict[str, Transport] | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db = db or Database(settings.database_url)
        self.writer = GroupCommitWriter(self.db, self.clock, max_events=settings.writer_max_events)
        self.queries = Queries(self.db, self.clock, settings.stuck_after_ms)
        self.keys = KeyService(self.db, self.clock, settings.key_cache_s)
        self.orgs = OrgService(self.db, self.clock)
        self.metrics = MetricsQueries(self.db, self.clock, self.settings)
        self.exports = Exports(self.db, self.clock, settings.stuck_after_ms, self.metrics)
        self._partitions = EventPartitions(self.db, self.clock, settings)
        # What this process did and what the database says, for /metrics (a registry of its own).
        self.telemetry = Telemetry(self.db, self.clock, settings.stuck_after_ms, settings.metrics_org_labels)
        if retry_transport is None and settings.retry_webhook_url:
            secret = settings.retry_webhook_secret
            if secret is None:
                logger.warning(
                    "retry webhook has no secret; commands go out unsigned (VOICEMON_RETRY_WEBHOOK_SECRET)",
                    extra={"action": "webhook_unsigned"},
                )
            retry_transport = WebhookHandler(
                settings.retry_webhook_url,
                secret.get_secret_value() if secret else None,
                settings.retry_webhook_timeout_s,
            )
        # The outbox dispatcher, a lane per kind of delivery; retry commands are the kind "retry".
        self.dispatcher = Dispatcher(
            self.db,
            self.clock,
            lease_ms=int(settings.outbox_lease_s * 1000),
            poll_s=settings.dispatcher_poll_s,
            observe=lambda kind, outcome: self.telemetry.deliveries.labels(kind, outcome).inc(),
        )
        self._retry_delivery = RetryDelivery(self.db, self.clock, retry_policy(settings), retry_transport)
        self.dispatcher.register(RETRY_KIND, self._retry_delivery)
        # Alert notifications (SPEC 15): one outbox kind per configured channel.
        self.alert_channels = alert_transports if alert_transports is not None else alert_channels(settings)
        for channel, transport in self.alert_channels.items():
            self.dispatcher.register(channel, NotificationKind(channel, transport, retry_policy(settings)))
        channels = tuple(self.alert_channels)
        self._alertmanager: AlertmanagerClient | None = None
        if settings.alert_alertmanager_url:
            client = AlertmanagerClient(settings.alert_alertmanager_url, settings.retry_webhook_timeout_s)
            self._alertmanager = client
            kind = AlertmanagerKind(
                self.db, self.clock, client, retry_policy(settings), settings.schedule_evaluate_alerts
            )
            self.dispatcher.register(Channel.ALERTMANAGER, kind)
            channels += (Channel.ALERTMANAGER,)
        self.alerts = AlertService(
            self.db, self.clock, settings, lambda: channels, on_commit=self.dispatcher.wake
        )
        self.retries = RetryService(
            self.db,
            self.clock,
            settings.stuck_after_ms,
            has_handler=lambda: self.retry_transport is not None,
            on_commit=self.dispatcher.wake,
        )

    def migrate(self) -> Upgraded:
        """Apply every schema migration not yet applied (idempotent); says from which revision to which.
        Raises ConflictError when a newer voicemon migrated the database."""
        state = migrate.schema_state(self.db)
        if not state.known:
            raise ConflictError(self._newer_schema(state), code="schema_unknown")
        return migrate.upgrade(self.db)

    def require_schema(self) -> None:
        """Raise ConflictError unless the database has the schema of this code (``schema_missing``,
        ``schema_behind`` or ``schema_unknown``); one read of its revision, so it creates nothing."""
        state = migrate.schema_state(self.db)
        where = self.db.engine.url.render_as_string(hide_password=True)
        if not state.known:
            raise ConflictError(self._newer_schema(state), code="schema_unknown")
        if state.current is None:
            raise ConflictError(
                f"the database {where} has no voicemon schema: run voicemon db upgrade", code="schema_missing"
            )
        if not state.is_current:
            raise ConflictError(
                f"the database {where} has the schema of revision {state.current}, and this voicemon "
                f"needs {state.head}: run voicemon db upgrade",
                code="schema_behind",
            )

    def _newer_schema(self, state: SchemaState) -> str:
        where = self.db.engine.url.render_as_string(hide_password=True)
        return (
            f"the database {where} has the schema of revision {state.current}, which this voicemon does "
            f"not know (its newest is {state.head}): a newer voicemon migrated it"
        )

    def start(self, *, migrate_schema: bool = True, run_dispatcher: bool = False) -> None:
        """Migrate, start the ingest writer and, when asked, the outbox dispatcher's threads."""
        if migrate_schema:
            self.migrate()
            self._ensure_partitions()
        self.writer.start()
        self.db.start_maintenance()
        if run_dispatcher:
            self.dispatcher.start()

    def _ensure_partitions(self) -> None:
        """PostgreSQL: the event partitions of today and the days ahead, at once rather than at the
        job's next run (after the migration, or when no process ran the scheduler for days). If their
        locks are not to be had now, the job makes them later; events go to the default partition
        meanwhile."""
        try:
            self._partitions.ensure()
        except StorageError:
            logger.warning(
                "event partitions not made at start", exc_info=True, extra={"action": "partitions_deferred"}
            )

    @property
    def retry_transport(self) -> Transport | None:
        """Where retry commands go: the webhook, a registered in-process handler, or None (nowhere)."""
        return self._retry_delivery.transport

    def set_retry_handler(self, handler: RetryHandler) -> None:
        """Register the in-process callable that tells an embedding pipeline to retry (library API)."""
        self._retry_delivery.transport = handler_transport(handler)

    def stop(self) -> None:
        self.dispatcher.stop()
        self.writer.stop()
        if self._alertmanager is not None:
            self._alertmanager.close()
        self.db.dispose()

    def _prepare(self, items: Sequence[object], principal: Principal) -> tuple[IngestResult, list[Any]]:
        require_role(principal, *WRITERS)
        valid, rejected = validate_items(
            items, principal, self.clock.now_ms(), self.settings.event_retention_ms
        )
        return IngestResult(rejected=rejected), list(valid)

    async def ingest(self, items: Sequence[object], principal: Principal) -> IngestResult:
        """Validate and store; returns once the accepted events are committed."""
        result, valid = self._prepare(items, principal)
        started = time.perf_counter()
        inserted = await asyncio.wrap_future(self.writer.submit(valid))
        return self._ingested(result, valid, inserted, items, started)

    def ingest_blocking(self, items: Sequence[object], principal: Principal) -> IngestResult:
        """The same as :meth:`ingest`, for callers without an event loop (CLI, simulator, tests)."""
        result, valid = self._prepare(items, principal)
        started = time.perf_counter()
        inserted = self.writer.submit(valid).result()
        return self._ingested(result, valid, inserted, items, started)

    async def ingest_spans(self, spans: Sequence[Span], principal: Principal) -> SpanResult:
        """OTLP spans (SPEC 18) as their events, down the same path as :meth:`ingest`; returns once the
        events of the accepted spans are committed. Refused spans are counted and logged, since the
        common exporters never read the reply."""
        require_role(principal, *WRITERS)
        # Off the event loop: a large request maps and validates for a while (as the writer commits).
        keep, report, items = await asyncio.to_thread(
            span_batch, spans, principal, self.clock.now_ms(), self.settings.event_retention_ms
        )
        started = time.perf_counter()
        inserted = await asyncio.wrap_future(self.writer.submit(keep))
        self._ingested(report.events, keep, inserted, items, started)
        self.telemetry.otlp_spans.labels("accepted").inc(report.accepted_spans)
        self.telemetry.otlp_spans.labels("ignored").inc(report.ignored_spans)
        if report.refused:
            self.telemetry.otlp_spans.labels("rejected").inc(len(report.refused))
            span_id, why = report.refused[0]
            logger.warning(
                "otlp spans rejected",
                extra={
                    "action": "otlp_spans_rejected",
                    "count": len(report.refused),
                    "first": f"{span_id}: {why}",
                },
            )
        return report

    def _ingested(
        self,
        result: IngestResult,
        valid: list[Any],
        inserted: set[str],
        items: Sequence[object],
        started: float,
    ) -> IngestResult:
        if valid:
            self.telemetry.ingest_commit.observe(time.perf_counter() - started)
        self.telemetry.ingested(valid, inserted, items, result.rejected)
        result.accepted = len(inserted)
        result.duplicates = len(valid) - len(inserted)
        return result
