"""Migrations build exactly the tables the code declares, on both databases, and re-running is a no-op."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, text

from tests.conftest import process_database
from voicemon.domain.partitions import day_of, name_of
from voicemon.errors import IntegrityConflict
from voicemon.service import Services
from voicemon.storage import Database, migrate
from voicemon.storage.partitions import list_partitions
from voicemon.storage.tables import metadata


def test_migrated_schema_matches_the_tables_in_code(services: Services) -> None:
    assert migrate.pending_differences(services.db) == []


def test_upgrade_twice_is_a_no_op(services: Services) -> None:
    migrate.upgrade(services.db)
    with services.db.read() as conn:
        tables = set(inspect(conn).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert migrate.pending_differences(services.db) == []


@pytest.fixture
def scratch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this test's own: these tests drop every table, which other tests' shared database
    must keep (with its partitions)."""
    with process_database(tmp_path_factory, "migrations") as url:
        yield url


def _start_at(db: Database, revision: str) -> None:
    """Drop every table, then migrate the empty database up to ``revision`` only."""
    with db.write() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    migrate.upgrade(db, revision)


def test_owner_migration_keeps_every_artifact_and_retry(scratch_url: str) -> None:
    """0004 names artifacts by (owner, id): rows stored before it keep their data and get their owner."""
    db = Database(scratch_url)
    try:
        _start_at(db, "0003")
        base = (
            "INSERT INTO artifacts (artifact_id, organization_id, status, first_event_at_ms,"
            " last_event_at_ms, listed_at_ms, event_count, retry_count, total_cost_nusd, stage_started)"
            " VALUES (:a, :o, 'failed', 1, 2, 1, 3, 1, 7, '{}')"
        )
        retry = (
            "INSERT INTO retries (retry_id, artifact_id, stage, attempt, requested_by, status, created_ms)"
            " VALUES (:r, :a, 'full', 1, 'ops', 'pending', 5)"
        )
        with db.write() as conn:
            conn.execute(text(base), [{"a": "x1", "o": "org-a"}, {"a": "x2", "o": None}])
            conn.execute(
                text(retry), [{"r": "r1", "a": "x1"}, {"r": "r2", "a": "x2"}, {"r": "r3", "a": "gone"}]
            )
        migrate.upgrade(db)
        with db.read() as conn:
            arts = conn.execute(
                text("SELECT owner, artifact_id, organization_id, total_cost_nusd FROM artifacts")
            )
            retries = conn.execute(text("SELECT retry_id, owner, artifact_id FROM retries"))
            assert sorted(map(tuple, arts)) == [("", "x2", None, 7), ("org-a", "x1", "org-a", 7)]
            assert sorted(map(tuple, retries)) == [
                ("r1", "org-a", "x1"),
                ("r2", "", "x2"),
                ("r3", "", "gone"),
            ]
        assert migrate.pending_differences(db) == []
    finally:
        db.dispose()


def test_from_status_migration_marks_every_earlier_retry_failed(scratch_url: str) -> None:
    """0005 adds retries.from_status: before it only failed artifacts could be retried."""
    db = Database(scratch_url)
    try:
        _start_at(db, "0004")
        retry = (
            "INSERT INTO retries (retry_id, owner, artifact_id, stage, attempt, requested_by, status,"
            " created_ms) VALUES (:r, 'org-a', :a, 'full', 1, 'ops', :s, 5)"
        )
        with db.write() as conn:
            conn.execute(
                text(retry), [{"r": "r1", "a": "x1", "s": "pending"}, {"r": "r2", "a": "x2", "s": "failed"}]
            )
        migrate.upgrade(db)
        with db.read() as conn:
            rows = conn.execute(text("SELECT retry_id, status, from_status FROM retries"))
            assert sorted(map(tuple, rows)) == [("r1", "pending", "failed"), ("r2", "failed", "failed")]
        assert migrate.pending_differences(db) == []
        # The default served the rows written before; a new row must say what it started from.
        with pytest.raises(IntegrityConflict), db.write() as conn:
            conn.execute(text(retry), {"r": "r3", "a": "x3", "s": "pending"})
    finally:
        db.dispose()


def test_partitioning_migration_keeps_every_event(scratch_url: str) -> None:
    """0009 partitions events by day on PostgreSQL (and moves the unique guard to (event_id, ts_ms) on
    both): every row is copied with its sequence number, into the partition of its day, and the next
    event is numbered after them."""
    db = Database(scratch_url)
    try:
        _start_at(db, "0008")
        day = 86_400_000
        t0 = 1_796_515_200_000  # 2026-12-06T00:00Z
        rows = [
            {"e": f"m-{i}", "t": t0 + (i % 3) * day + i * 1000, "o": None if i % 4 == 0 else f"org-{i % 2}"}
            for i in range(30)
        ]
        insert = (
            "INSERT INTO events (event_id, event_type, organization_id, ts_ms, received_ms, cost_nusd)"
            " VALUES (:e, 'artifact_received', :o, :t, :t, 7)"
        )
        with db.write() as conn:
            conn.execute(text(insert), rows)
        read = "SELECT seq, event_id, organization_id, ts_ms, cost_nusd FROM events ORDER BY seq"
        with db.read() as conn:
            before = [tuple(r) for r in conn.execute(text(read))]
        assert len(before) == len(rows)

        migrate.upgrade(db)

        with db.read() as conn:
            assert [tuple(r) for r in conn.execute(text(read))] == before
            if not db.is_sqlite:
                homes = conn.execute(text("SELECT ts_ms, tableoid::regclass::text FROM events"))
                assert {(name_of(day_of(ts)), where) for ts, where in homes} == {
                    (where, where) for where in ("events_p20261206", "events_p20261207", "events_p20261208")
                }
                assert [p.name for p in list_partitions(conn)] == [
                    "events_p20261206",
                    "events_p20261207",
                    "events_p20261208",
                ]
        assert migrate.pending_differences(db) == []
        with db.write() as conn:
            conn.execute(text(insert), {"e": "m-new", "o": None, "t": t0})
        with db.read() as conn:
            newest = conn.execute(text("SELECT seq FROM events WHERE event_id = 'm-new'")).scalar_one()
        assert newest > max(r[0] for r in before)
        # The guard: the same event (id and timestamp) cannot be stored twice.
        with pytest.raises(IntegrityConflict), db.write() as conn:
            conn.execute(text(insert), {"e": "m-new", "o": None, "t": t0})
    finally:
        db.dispose()
