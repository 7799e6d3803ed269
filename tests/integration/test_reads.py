"""Reads see one moment: a detail read with its timeline, or a page with its count, never mixes states."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import ev
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.service import Services
from voicemon.storage import artifacts as artifact_store
from voicemon.storage import events as event_store
from voicemon.storage.database import WRITE_OPTION


def test_a_read_does_not_see_a_write_committed_while_it_runs(services: Services) -> None:
    t0 = NOW_MS - 10 * MINUTE_MS
    services.ingest_blocking([ev("artifact_received", "r1", t0, organization_id="o1")], STAFF)
    with services.db.read() as conn:
        before = artifact_store.get_artifact(conn, ("o1", "r1"))
        assert before is not None
        assert before.status.value == "received"
        # A writer commits while the read is open (the group-commit writer uses its own connection).
        result = services.ingest_blocking(
            [ev("transcription_started", "r1", t0 + 1000, organization_id="o1")], STAFF
        )
        assert result.accepted == 1
        again = artifact_store.get_artifact(conn, ("o1", "r1"))
        timeline = event_store.timeline(conn, ("o1", "r1"))
    assert again is not None
    assert again.status.value == "received"
    assert [s.event.event_type.value for s in timeline] == ["artifact_received"]
    with services.db.read() as conn:
        after = artifact_store.get_artifact(conn, ("o1", "r1"))
    assert after is not None
    assert after.status.value == "transcribing"


def test_the_artifact_detail_shows_a_retry_outcome_only_with_the_status_it_gave(api: Api) -> None:
    """A completion that ends a retry commits while the detail is being read, just after its summary row:
    the reply still shows one moment (before), and the next reply shows the other (after)."""
    services = api.services
    t0 = NOW_MS - 10 * MINUTE_MS
    failed = [
        ev("artifact_received", "r2", t0, organization_id="o1"),
        ev("transcription_failed", "r2", t0 + 1),
    ]
    assert services.ingest_blocking(failed, STAFF).accepted == 2
    services.set_retry_handler(lambda command: None)
    started = api.call("POST", "/v1/artifacts/r2/retries", json={"stage": "full", "reason": "test"})
    assert started.status_code == 202, started.text
    completion = [ev("transcription_started", "r2", NOW_MS + 10), ev("artifact_completed", "r2", NOW_MS + 20)]
    armed = [True]

    @event.listens_for(services.db.engine, "after_cursor_execute")
    def _complete_mid_read(conn: Connection, _c: Any, statement: str, *_: Any) -> None:
        if armed[0] and "FROM artifacts" in statement and not conn.get_execution_options().get(WRITE_OPTION):
            armed[0] = False
            assert services.ingest_blocking(completion, STAFF).accepted == 2

    during = api.call("GET", "/v1/artifacts/r2").json()
    event.remove(services.db.engine, "after_cursor_execute", _complete_mid_read)
    assert not armed[0], "the completion was not injected"
    assert during["status"] == "received"
    assert [r["status"] for r in during["retries"]] == ["pending"]
    assert "artifact_completed" not in [e["event_type"] for e in during["timeline"]]
    after = api.call("GET", "/v1/artifacts/r2").json()
    assert after["status"] == "completed"
    assert [r["status"] for r in after["retries"]] == ["succeeded"]
