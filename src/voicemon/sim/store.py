"""The simulated pipeline's own derived data (transcripts, claims, resolutions, drafts), in SQLite.

Every row records the run that wrote it (``initial`` or the retry id), so one can see that a full retry
rebuilt an artifact from scratch.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

TABLES = {
    "transcription": "transcripts",
    "claims_extraction": "claims",
    "entity_resolution": "resolutions",
    "draft_generation": "drafts",
}


class DerivedStore:
    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            for table in TABLES.values():
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} "
                    "(artifact_id TEXT NOT NULL, run_id TEXT NOT NULL, content TEXT NOT NULL)"
                )
                self._conn.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_artifact ON {table} (artifact_id)")

    def write(self, artifact_id: str, stage: str, run_id: str, rows: Iterable[str]) -> None:
        """Replace the stage's rows of the artifact, in one transaction."""
        table = TABLES[stage]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(f"DELETE FROM {table} WHERE artifact_id = ?", (artifact_id,))
                self._conn.executemany(
                    f"INSERT INTO {table} (artifact_id, run_id, content) VALUES (?, ?, ?)",
                    [(artifact_id, run_id, r) for r in rows],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def delete_all(self, artifact_id: str) -> int:
        """Delete every derived row of the artifact in one transaction (all or nothing); returns how many."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = 0
                for table in TABLES.values():
                    deleted += self._conn.execute(
                        f"DELETE FROM {table} WHERE artifact_id = ?", (artifact_id,)
                    ).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return deleted

    def rows(self, artifact_id: str) -> dict[str, list[tuple[str, str]]]:
        """(run_id, content) of every derived row of the artifact, by stage."""
        with self._lock:
            return {
                stage: list(
                    self._conn.execute(
                        f"SELECT run_id, content FROM {table} WHERE artifact_id = ? ORDER BY rowid",
                        (artifact_id,),
                    )
                )
                for stage, table in TABLES.items()
            }

    def close(self) -> None:
        with self._lock:
            self._conn.close()
