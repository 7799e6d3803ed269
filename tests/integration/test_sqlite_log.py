"""SQLite's write-ahead log: the background copy restarts a long log itself, with no wait, so that no
committing request ever has to copy it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.conftest import BACKEND
from tests.helpers import wait_for
from voicemon.storage import Database, database

pytestmark = pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's log only")


def test_a_long_log_is_restarted_and_a_short_one_only_copied(tmp_path: Any, monkeypatch: Any) -> None:
    db = Database(f"sqlite:///{tmp_path}/log.db")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE probe (v TEXT)"))
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))

    def write_and_copy(rows: int) -> list[str]:
        for i in range(rows):
            with db.write() as conn:
                conn.execute(text("INSERT INTO probe (v) VALUES (:v)"), {"v": "x" * 3000 + str(i)})
        sent.clear()
        with db.engine.connect() as conn:
            database._checkpoint(conn)
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == database.SQLITE_BUSY_TIMEOUT_MS
        return [s for s in sent if "wal_checkpoint" in s]

    monkeypatch.setattr(database, "SQLITE_RESTART_FRAMES", 10_000)
    assert write_and_copy(5) == ["PRAGMA wal_checkpoint(PASSIVE)"]
    monkeypatch.setattr(database, "SQLITE_RESTART_FRAMES", 5)
    passive, restart = "PRAGMA wal_checkpoint(PASSIVE)", "PRAGMA wal_checkpoint(RESTART)"
    assert write_and_copy(5) == [passive, passive, restart]

    # A restart that would have to wait for a reader does not wait: it copies what it can.
    monkeypatch.setattr(database, "SQLITE_RESTART_FRAMES", 1)
    with db.write() as conn:
        conn.execute(text("INSERT INTO probe (v) VALUES ('read through the log')"))
    with db.engine.connect() as reader:
        assert reader.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 11  # its snapshot stays open
        with db.write() as conn:
            conn.execute(text("INSERT INTO probe (v) VALUES ('late')"))
        started = time.monotonic()
        with db.engine.connect() as conn:
            database._checkpoint(conn)  # returns at once instead of failing or blocking
        # Far below the busy timeout the writers use, which a waiting restart would have spent.
        assert time.monotonic() - started < database.SQLITE_BUSY_TIMEOUT_MS / 1000 / 4
        reader.rollback()
    db.dispose()


def _log_bytes(path: Any) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_burst_does_not_leave_a_large_log_behind(tmp_path: Any) -> None:
    """After a burst the log is copied but never restarted: left alone it would keep its size while the
    server runs. The background copy empties it once it holds nothing uncopied."""
    path = tmp_path / "burst.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE probe (v TEXT)"))
    burst_bytes = 2 * database.SQLITE_LOG_LIMIT_BYTES
    row = "x" * 100_000
    for i in range(burst_bytes // len(row)):
        with db.write() as conn:
            conn.execute(text("INSERT INTO probe (v) VALUES (:v)"), {"v": row + str(i)})
    assert _log_bytes(path) > database.SQLITE_LOG_LIMIT_BYTES, "the burst grew the log"
    db.start_maintenance()
    try:
        wait_for(lambda: _log_bytes(path) <= database.SQLITE_LOG_LIMIT_BYTES, 10, "the log to shrink")
        with db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM probe")).scalar() == burst_bytes // len(row)
    finally:
        db.dispose()


def test_emptying_the_log_waits_for_no_reader(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "SQLITE_LOG_LIMIT_BYTES", 64 * 1024)
    path = tmp_path / "reader.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE probe (v TEXT)"))
    for i in range(40):
        with db.write() as conn:
            conn.execute(text("INSERT INTO probe (v) VALUES (:v)"), {"v": "y" * 4000 + str(i)})
    with db.engine.connect() as reader:
        assert reader.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 40  # holds a snapshot
        started = time.monotonic()
        with db.engine.connect() as conn:
            database._checkpoint(conn)
        assert time.monotonic() - started < database.SQLITE_BUSY_TIMEOUT_MS / 1000 / 4
        reader.rollback()
    with db.engine.connect() as conn:
        database._checkpoint(conn)
    assert _log_bytes(path) == 0, "with the reader gone, the copied log is emptied"
    db.dispose()
