"""Retry use cases (SPEC 9): request a retry in one transaction, list an artifact's retries.

Everything a retry changes commits together or not at all: the retry record, its ``retry_initiated``
event (stored through the same path as ingested events, so counters and the timeline see it, and whose
fold resets the artifact's status), and the outbox entry the dispatcher delivers after commit. Every
refusal raises before anything is written, inside the transaction, so it leaves no trace; they are
checked in the order of SPEC 9, the first that applies answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.access import READERS, STAFF_ONLY, Principal, require_role
from voicemon.domain.artifacts import ArtifactState, choose_artifact
from voicemon.domain.ids import time_ordered_id
from voicemon.domain.model import EventType
from voicemon.domain.retries import (
    MAX_REASON_CHARS,
    MAX_RETRIES_PER_HOUR,
    RATE_WINDOW_MS,
    EventMaker,
    FromStatus,
    Retry,
    RetryStage,
    RetryStatus,
    check_start,
    retry_origin,
)
from voicemon.domain.text import require_text
from voicemon.errors import (
    ConflictError,
    IntegrityConflict,
    NotFoundError,
    RateLimitError,
    UnavailableError,
    ValidationError,
)
from voicemon.service.ingest import store_events
from voicemon.storage import Database
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import outbox as outbox_store
from voicemon.storage import retries as retry_store

OUTBOX_KIND = "retry"


@dataclass(frozen=True, slots=True)
class RetryCommand:
    """What the pipeline is told (the webhook body, or the argument of an in-process handler)."""

    retry_id: str
    artifact_id: str
    voice_note_id: str | None
    organization_id: str | None
    stage: str
    attempt: int
    full_cleanup: bool

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "retry_id": self.retry_id,
                "artifact_id": self.artifact_id,
                "voice_note_id": self.voice_note_id,
                "organization_id": self.organization_id,
                "stage": self.stage,
                "attempt": self.attempt,
                "full_cleanup": self.full_cleanup,
            }
        )

    @classmethod
    def from_json(cls, payload: str | bytes) -> RetryCommand:
        return cls(**orjson.loads(payload))


class RetryService:
    """Retries of failed and stuck artifacts. ``stuck_after_ms`` is the stuck threshold (SPEC 4);
    ``has_handler`` says, when asked, whether retry commands have anywhere to go (a webhook or an
    in-process handler: it may be registered after this service is built); ``on_commit`` is called
    after each accepted retry commits (it wakes the dispatcher)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        stuck_after_ms: int,
        has_handler: Callable[[], bool],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._stuck_after_ms = stuck_after_ms
        self._has_handler = has_handler
        self._on_commit = on_commit

    def request(
        self,
        principal: Principal,
        artifact_id: str,
        stage: str,
        reason: str,
        organization_id: str | None = None,
    ) -> Retry:
        """Start a retry of the failed or stuck artifact named by ``artifact_id`` and ``organization_id``
        (see :func:`~voicemon.domain.artifacts.choose_artifact`). Raises, in this order and each before
        anything is written: NotFound (404); Conflict ``ambiguous_artifact``, ``not_failed``,
        ``retry_in_progress``, ``stage_after_failure`` (409); Unavailable ``no_retry_handler`` (503);
        RateLimit ``too_many_retries`` (429). Forbidden (403) and Validation (422) come first."""
        require_role(principal, *STAFF_ONLY)
        retry_stage = _parse_stage(stage)
        require_text("reason", reason, max_chars=MAX_REASON_CHARS)
        now_ms = self._clock.now_ms()
        try:
            with self._db.write() as conn:
                state = self._locked(conn, principal, artifact_id, organization_id, now_ms)
                key = state.key
                origin = retry_origin(state.status, state.is_stuck(now_ms, self._stuck_after_ms))
                stats = retry_store.stats(conn, key, now_ms - RATE_WINDOW_MS)
                flying = stats.in_flight
                if flying is not None:
                    raise ConflictError(
                        f"retry {flying.retry_id} of this artifact is still {flying.status.value}",
                        code="retry_in_progress",
                    )
                reached = state.failed_stage if origin is FromStatus.FAILED else state.current_stage
                check_start(retry_stage, origin, reached)
                if not self._has_handler():
                    raise UnavailableError(
                        "no retry handler is configured (set VOICEMON_RETRY_WEBHOOK_URL or register an"
                        " in-process handler): the pipeline cannot be told to retry",
                        code="no_retry_handler",
                    )
                if stats.recent >= MAX_RETRIES_PER_HOUR:
                    raise RateLimitError(
                        f"at most {MAX_RETRIES_PER_HOUR} retries of one artifact per hour",
                        code="too_many_retries",
                    )
                retry = Retry(
                    retry_id=time_ordered_id(now_ms),
                    artifact_id=artifact_id,
                    organization_id=state.organization_id,
                    stage=retry_stage,
                    attempt=stats.attempts + 1,
                    requested_by=principal.name or principal.key_id,
                    reason=reason,
                    status=RetryStatus.PENDING,
                    from_status=origin,
                    created_ms=now_ms,
                )
                retry_store.insert_retry(conn, retry)
                # The reset is a status change at the retry's time; a failure stamped a little in the
                # future (clock skew, within the 5 minutes ingestion allows) must not outrank it.
                reset_ms = max(now_ms, state.status_at_ms or now_ms)
                initiated = EventMaker({key: state.voice_note_id}, now_ms)(
                    retry, EventType.RETRY_INITIATED, reset_ms, None
                )
                store_events(conn, [initiated], now_ms)
                command = RetryCommand(
                    retry.retry_id,
                    artifact_id,
                    state.voice_note_id,
                    state.organization_id,
                    retry_stage.value,
                    retry.attempt,
                    retry_stage is RetryStage.FULL,
                )
                outbox_store.enqueue(conn, OUTBOX_KIND, retry.retry_id, command.to_json().decode(), now_ms)
        except IntegrityConflict as exc:
            # Another request for this artifact committed first (unique in-flight / attempt rules).
            raise ConflictError(
                "another retry of this artifact was just started", code="retry_in_progress"
            ) from exc
        if self._on_commit is not None:
            self._on_commit()
        return retry

    @staticmethod
    def _locked(
        conn: Connection, principal: Principal, artifact_id: str, organization_id: str | None, now_ms: int
    ) -> ArtifactState:
        """The named artifact's summary, locked for this transaction."""
        chosen = choose_artifact(
            principal, artifact_id, organization_id, artifact_store.find_artifacts(conn, artifact_id)
        )
        locked = artifact_store.lock_artifacts(conn, [chosen.key], now_ms).get(chosen.key)
        if locked is None:  # removed by retention between the two reads
            raise NotFoundError(f"no artifact {artifact_id!r}", code="artifact_not_found")
        return locked

    def list(self, principal: Principal, artifact_id: str, organization_id: str | None = None) -> list[Retry]:
        """Retry history of one artifact, oldest first; 404 for an artifact the caller cannot see."""
        require_role(principal, *READERS)
        with self._db.read() as conn:
            found = artifact_store.find_artifacts(conn, artifact_id)
            chosen = choose_artifact(principal, artifact_id, organization_id, found)
            return retry_store.list_for(conn, chosen.key)


def _parse_stage(stage: str) -> RetryStage:
    try:
        return RetryStage(stage)
    except ValueError:
        allowed = ", ".join(s.value for s in RetryStage)
        raise ValidationError(f"must be one of: {allowed}", code="invalid_enum", field="stage") from None
