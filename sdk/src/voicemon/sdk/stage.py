"""``client.stage(...)``: time one pipeline stage and report how it went."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# stage -> (started, completed, failed) event types
STAGE_EVENTS: dict[str, tuple[str, str, str]] = {
    "transcription": ("transcription_started", "transcription_completed", "transcription_failed"),
    "claims_extraction": ("claims_extraction_started", "claims_extracted", "claims_extraction_failed"),
    "entity_resolution": (
        "entity_resolution_started",
        "entity_resolution_completed",
        "entity_resolution_failed",
    ),
    "draft_generation": ("draft_generation_started", "drafts_generated", "draft_generation_failed"),
}


class StageScope:
    """Logs the start on entry; on exit the completion (with ``duration_ms``) or the failure.

    Inside the block, :meth:`set` adds metadata to the completion event (``claim_count``,
    ``ai_cost_usd``, …) and :attr:`completed_type` may be changed, e.g. to
    ``"entity_needs_disambiguation"``. Used as a decorator, each call is timed on its own.
    """

    def __init__(
        self,
        log: Callable[..., None],
        stage: str,
        artifact_id: str,
        organization_id: str | None,
        fields: dict[str, Any],
    ) -> None:
        if stage not in STAGE_EVENTS:
            raise ValueError(f"stage must be one of {', '.join(STAGE_EVENTS)}")
        self._log = log
        self._stage = stage
        self._base: dict[str, Any] = {"artifact_id": artifact_id, **fields}
        if organization_id is not None:
            self._base["organization_id"] = organization_id
        self.started_type, self.completed_type, self.failed_type = STAGE_EVENTS[stage]
        self.metadata: dict[str, Any] = {}
        self._t0 = 0.0

    def set(self, **metadata: Any) -> None:
        """Add metadata to the event logged at the end of the block."""
        self.metadata.update(metadata)

    def __enter__(self) -> StageScope:
        self._log(self.started_type, **self._base)
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        duration_ms = (time.perf_counter() - self._t0) * 1000
        event: dict[str, Any] = dict(self._base, duration_ms=duration_ms)
        if self.metadata:
            event["metadata"] = dict(self.metadata)
        if exc_type is None:
            self._log(self.completed_type, **event)
        else:
            event["error_code"] = exc_type.__name__[:128]
            event["error_message"] = (str(exc) or exc_type.__name__)[:2000]
            self._log(self.failed_type, **event)

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = StageScope(self._log, self._stage, self._base["artifact_id"], None, dict(self._base))
            scope._base = dict(self._base)
            with scope:
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
