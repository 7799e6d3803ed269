"""Raw events by day (SPEC 19). On PostgreSQL, ``partition-events`` creates the day partitions ahead and
moves out of the default partition whatever landed there; retention drops each wholly expired day and
deletes rows only in the day the cutoff falls in. On SQLite there is one table, and every answer is the
same."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from tests.conftest import BACKEND, NOW_MS, STAFF, process_database
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain import partitions as plan
from voicemon.domain.records import EventFilter
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, format_time
from voicemon.jobs import build_runner
from voicemon.service import Services
from voicemon.service import partitions as partition_service
from voicemon.settings import Settings
from voicemon.storage import migrate
from voicemon.storage.partitions import list_partitions

ON_POSTGRESQL = BACKEND == "postgresql"
RETENTION_MS = 48 * HOUR_MS


@pytest.fixture
def fresh(tmp_path_factory: pytest.TempPathFactory, clock: FakeClock) -> Iterator[Services]:
    """Services on a database of their own (partitions made one day ahead)."""
    with process_database(tmp_path_factory, "partitions") as url:
        settings = Settings(database_url=url, key_cache_s=0, cleanup_batch_rows=7, event_partitions_ahead_d=1)
        svc = Services(settings, clock)
        svc.start()
        try:
            yield svc
        finally:
            svc.stop()


def _run(svc: Services, job: str) -> dict[str, Any]:
    record = build_runner(svc).run_now(STAFF, job)
    assert record.status == "succeeded", record.error
    assert record.summary is not None
    return orjson.loads(record.summary)  # type: ignore[no-any-return]


def _stored(svc: Services) -> list[tuple[Any, ...]]:
    """Every stored event as (seq, event_id, ts_ms, table it lives in)."""
    where = "tableoid::regclass::text" if ON_POSTGRESQL else "'events'"
    with svc.db.read() as conn:
        rows = conn.execute(text(f"SELECT seq, event_id, ts_ms, {where} FROM events ORDER BY seq"))
        return [tuple(r) for r in rows]


def _answers(svc: Services) -> tuple[Any, ...]:
    """What a reader sees: the event list, one artifact, and the live counters."""
    page = svc.queries.list_events(STAFF, EventFilter(), None, 500)
    listed = [(s.event.event_id, s.event.timestamp_ms) for s in page.items]
    art = svc.queries.artifact(STAFF, "p-0").summary
    return listed, art.event_count, art.status


@pytest.mark.skipif(not ON_POSTGRESQL, reason="partitions are PostgreSQL's")
def test_the_job_creates_the_days_ahead_and_moves_what_the_default_partition_held(
    fresh: Services, clock: FakeClock
) -> None:
    """At start the server makes the partitions of retention and one day ahead. Three days later, with
    no job run meanwhile, events of the new days go to the default partition; the job makes their days
    and moves them there, numbers and answers unchanged."""
    with fresh.db.read() as conn:
        made = list_partitions(conn)
    at_start = plan.days_needed(NOW_MS, RETENTION_MS, 1)
    assert [(p.start_ms, p.end_ms, p.name) for p in made] == [
        (d, d + DAY_MS, plan.name_of(d)) for d in at_start
    ]

    later = NOW_MS + 3 * DAY_MS
    clock.set(later)
    times = [later - 40 * HOUR_MS, later - 20 * HOUR_MS, later - 2 * HOUR_MS, later + MINUTE_MS]
    batch = [ev("artifact_received", f"p-{i}", t, organization_id="org-a") for i, t in enumerate(times)]
    assert fresh.ingest_blocking(batch, STAFF).accepted == len(batch)
    before, answers = _stored(fresh), _answers(fresh)
    homes = [where for *_, where in before]
    assert homes == [plan.name_of(plan.day_of(times[0]))] + [plan.DEFAULT_PARTITION] * 3

    summary = _run(fresh, "partition-events")

    new_days = [d for d in plan.days_needed(later, RETENTION_MS, 1) if d not in at_start]
    assert len(new_days) == 3  # the day before yesterday was made at start; yesterday, today, tomorrow
    assert summary["partitions_created"] == [format_time(d) for d in new_days]
    assert summary["rows_moved"] == 3
    after = _stored(fresh)
    # Same rows, same sequence numbers, each in the partition of its day.
    assert [r[:3] for r in after] == [r[:3] for r in before]
    assert [where for *_, where in after] == [plan.name_of(plan.day_of(t)) for t in times]
    assert _answers(fresh) == answers
    assert migrate.pending_differences(fresh.db) == []

    # Nothing left to do; a new event goes straight to its day, and its number follows the others.
    again = _run(fresh, "partition-events")
    assert (again["partitions_created"], again["rows_moved"]) == ([], 0)
    assert fresh.ingest_blocking([ev("artifact_received", "p-9", later)], STAFF).accepted == 1
    newest = _stored(fresh)[-1]
    assert newest[0] > after[-1][0]
    assert newest[3] == plan.name_of(plan.day_of(later))


def test_retention_drops_wholly_expired_days_and_deletes_only_the_rest(
    fresh: Services, clock: FakeClock
) -> None:
    """Events from six days back up to now; the cutoff falls in the middle of a day. Rows of whole days
    before it go with their partition, rows of its own day one by one; a row exactly at it is kept."""
    cutoff = NOW_MS - RETENTION_MS
    old_start = NOW_MS - 4 * DAY_MS
    plan_of_times: list[tuple[int, list[int]]] = [
        # (clock when sent, timestamps): every timestamp is inside retention when it is sent.
        (old_start, [old_start - k * 71 * MINUTE_MS for k in range(40)]),
        (NOW_MS - HOUR_MS, [cutoff - 30 * MINUTE_MS, cutoff - 1]),
        (NOW_MS, [cutoff, cutoff + 1, NOW_MS]),
    ]
    for when, times in plan_of_times:
        clock.set(when)
        _run(fresh, "partition-events")
        batch = [ev("artifact_received", f"r-{t}", t, organization_id="org-a") for t in times]
        assert fresh.ingest_blocking(batch, STAFF).accepted == len(batch)
    expired_rows = sum(1 for _, times in plan_of_times for t in times if t < cutoff)
    with fresh.db.read() as conn:
        doomed = plan.expired(list_partitions(conn), cutoff) if ON_POSTGRESQL else []
    if ON_POSTGRESQL:
        assert len(doomed) == 4  # the four whole days before the cutoff's

    summary = _run(fresh, "cleanup-events")

    assert summary["events_deleted"] == expired_rows == 42
    assert summary["event_partitions_dropped"] == len(doomed)
    assert sorted(ts for _, _, ts, _ in _stored(fresh)) == [cutoff, cutoff + 1, NOW_MS]
    if ON_POSTGRESQL:
        with fresh.db.read() as conn:
            left = list_partitions(conn)
        assert not set(doomed) & set(left)
        assert left[0].start_ms == plan.day_of(cutoff)
    again = _run(fresh, "cleanup-events")
    assert (again["events_deleted"], again["event_partitions_dropped"]) == (0, 0)


def test_the_job_on_sqlite_says_there_is_nothing_to_partition(fresh: Services) -> None:
    summary = _run(fresh, "partition-events")
    assert summary["partitioned"] is ON_POSTGRESQL


def test_an_id_sent_again_on_another_day_is_a_duplicate(fresh: Services) -> None:
    """The unique guard holds the timestamp; the check before it does not: a re-sent id is a duplicate
    whatever its timestamp, also when it would fall in another partition."""
    _run(fresh, "partition-events")
    first = ev("artifact_received", "d-1", NOW_MS - DAY_MS, organization_id="org-a")
    assert fresh.ingest_blocking([first], STAFF).accepted == 1
    moved = {**first, "timestamp": ev("x", None, NOW_MS)["timestamp"]}
    result = fresh.ingest_blocking([moved], STAFF)
    assert (result.accepted, result.duplicates) == (0, 1)
    assert [r[1] for r in _stored(fresh)] == [first["event_id"]]


@pytest.mark.skipif(not ON_POSTGRESQL, reason="partitions are PostgreSQL's")
def test_a_drop_that_cannot_get_its_lock_gives_up_soon_and_the_next_run_drops(
    fresh: Services, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long read of events (an export) holds the table: the drop waits a second at a time, a few
    times, then gives up; the day's rows are deleted one by one instead, and the other kinds of rows
    expire as usual. The next run drops the emptied partition."""
    monkeypatch.setattr(partition_service, "LOCK_PAUSE_S", 0.05)
    clock.set(NOW_MS - 4 * DAY_MS)
    _run(fresh, "partition-events")
    old = ev("artifact_received", "old-1", clock.now_ms() - HOUR_MS, organization_id="org-a")
    assert fresh.ingest_blocking([old], STAFF).accepted == 1
    clock.set(NOW_MS)
    with fresh.db.read() as reading:
        reading.execute(text("SELECT count(*) FROM events")).scalar_one()  # holds its lock till the end
        summary = _run(fresh, "cleanup-events")
        assert (summary["events_deleted"], summary["event_partitions_dropped"]) == (1, 0)
        assert "artifacts_deleted" in summary
    assert _stored(fresh) == []
    with fresh.db.read() as conn:
        empty = plan.expired(list_partitions(conn), NOW_MS - RETENTION_MS)
    assert empty
    again = _run(fresh, "cleanup-events")
    assert (again["events_deleted"], again["event_partitions_dropped"]) == (0, len(empty))
