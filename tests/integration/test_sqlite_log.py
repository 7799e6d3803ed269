"""SQLite's write-ahead log: the background copy restarts a long log itself, with no wait, so that no
committing request ever has to copy it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.conftest import BACKEND
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
