"""The engine and its transactions: how voicemon connects to SQLite or PostgreSQL and writes to them.

How their SQL differs is :mod:`voicemon.storage.dialect`.

Reads use :meth:`Database.read`, one consistent snapshot. Writes use :meth:`Database.write`: on SQLite it
starts with ``BEGIN IMMEDIATE`` so the write lock is taken up front (no deadlock-prone lock upgrade); on
PostgreSQL rows are locked with ``FOR UPDATE`` where a read-modify-write needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from voicemon.errors import IntegrityConflict, StorageError

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CHECKPOINT_EVERY_S = 1.0
# The background thread restarts the log past this many frames (4 KiB each, so 64 MiB); SQLite's own
# copy at commit time is only a backstop, for when the thread cannot keep up.
SQLITE_RESTART_FRAMES = 16_384
# The log file's size once it has been copied: a restarted log is cut back to this (journal_size_limit),
# and a log wholly copied but larger is emptied at once, so a burst does not leave a large file behind.
SQLITE_LOG_LIMIT_BYTES = 16 * 1024 * 1024
SQLITE_FRAME_BYTES = 4096 + 24
SQLITE_AUTOCHECKPOINT_PAGES = 262_144
CHECKPOINT_NICENESS = 10
WRITE_OPTION = "voicemon_write"
T = TypeVar("T")


class Database:
    """Owns the engine. ``read()`` and ``write()`` are the only ways the service layer gets a connection."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        # Errors of statements sent through the driver's own cursor (:func:`driver_cursor`).
        driver = self.engine.dialect.loaded_dbapi
        self._driver_error: type[Exception] = driver.Error
        self._driver_integrity_error: type[Exception] = driver.IntegrityError
        self._checkpointer: _Checkpointer | None = None

    def start_maintenance(self) -> None:
        """SQLite only: copy the write-ahead log into the database file from a background thread.

        Left to SQLite, the commit that crosses the log's size threshold does the copy and its fsync
        itself, and every request waiting on that commit waits for the disk (tens of milliseconds here).
        A passive checkpoint every second never blocks writers; a long log is restarted (:func:`_checkpoint`).
        """
        if self.is_sqlite and self._checkpointer is None:
            self._checkpointer = _Checkpointer(self.engine, SQLITE_CHECKPOINT_EVERY_S)
            self._checkpointer.start()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only view of one moment: every statement inside sees the same committed state, so an
        artifact read with its timeline and retries, or a count read with its rows, always agree.

        SQLite's deferred transaction already reads one snapshot of the log. PostgreSQL's default
        (READ COMMITTED) takes a new snapshot per statement, so reads ask for REPEATABLE READ; a read-only
        transaction at that level never fails with a serialization error."""
        try:
            with self.engine.connect() as plain:
                conn = plain
                if not self.is_sqlite:
                    conn = plain.execution_options(
                        isolation_level="REPEATABLE READ", postgresql_readonly=True
                    )
                yield conn
        except (OperationalError, DBAPIError, self._driver_error) as exc:
            raise StorageError(f"database read failed: {exc.__class__.__name__}") from exc

    @contextmanager
    def write(self, *, pipelined: bool = False) -> Iterator[Connection]:
        """One transaction: everything inside commits together or not at all.

        ``pipelined`` (PostgreSQL; the ingest hot path): statements are sent without waiting for each
        answer (psycopg's pipeline mode). What is queued travels with the next read of a result, or
        with the COMMIT, in one round trip. The body must only use the driver-cursor helpers of
        :mod:`voicemon.storage.dialect` (``send_many``, ``ask_keys``, ``ask_pairs``): SQLAlchemy looks
        at a statement's result as soon as it is sent, before a pipelined answer has arrived. An error
        of a queued statement is raised at that next read or at the commit, and the whole transaction
        is rolled back as usual."""
        with self._write_errors(), self.engine.connect() as plain, _transaction(plain, pipelined) as conn:
            yield conn

    def kept_connection(self) -> KeptConnection:
        """A connection for one thread's many transactions (see :class:`KeptConnection`)."""
        return KeptConnection(self)

    @contextmanager
    def _write_errors(self) -> Iterator[None]:
        """Errors of a write, from SQLAlchemy or straight from the driver, as the service layer's."""
        try:
            yield
        except (IntegrityError, self._driver_integrity_error) as exc:
            raise IntegrityConflict("a unique rule refused the write") from exc
        except (OperationalError, DBAPIError, self._driver_error) as exc:
            logger.warning("database write failed", exc_info=True, extra={"action": "db_write_failed"})
            raise StorageError(f"database write failed: {exc.__class__.__name__}") from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()


class KeptConnection:
    """One connection that a single thread keeps across its transactions: the ingest writer commits
    hundreds of times a second, and the pool's checkout with its liveness ping cost 0.2 ms on
    PostgreSQL, a tenth of a single-event commit. A transaction that fails for any reason but a unique
    rule drops the connection; the next one checks out a fresh, pinged connection."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._plain: Connection | None = None

    @contextmanager
    def write(self, *, pipelined: bool = False) -> Iterator[Connection]:
        """As :meth:`Database.write`."""
        try:
            with self._db._write_errors():
                if self._plain is None:
                    self._plain = self._db.engine.connect()
                with _transaction(self._plain, pipelined) as conn:
                    yield conn
        except StorageError:
            self.close(broken=True)
            raise
        except BaseException:
            self._end_failed_transaction()
            raise

    def _end_failed_transaction(self) -> None:
        """When a COMMIT fails (a unique rule refused a queued insert), SQLAlchemy leaves the driver's
        failed transaction open; the pool would roll it back on return, but this connection stays out.
        Roll it back here, or drop the connection if even that fails."""
        if self._plain is None:
            return
        try:
            raw = self._plain.connection.driver_connection
            assert raw is not None
            raw.rollback()
        except Exception:
            self.close(broken=True)

    def close(self, *, broken: bool = False) -> None:
        plain, self._plain = self._plain, None
        if plain is None:
            return
        with contextlib.suppress(Exception):
            if broken:
                plain.invalidate()
            plain.close()


class _Checkpointer:
    def __init__(self, engine: Engine, every_s: float) -> None:
        self._engine = engine
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voicemon-sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # Copying the log is background work: at a lower priority it yields the core to requests
        # instead of holding them up for the 10 to 80 ms a copy takes under load.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECKPOINT_NICENESS)
        while not self._stop.wait(self._every_s):
            try:
                with self._engine.connect() as conn:
                    _checkpoint(conn)
            except Exception:
                logger.warning(
                    "checkpoint failed", exc_info=True, extra={"action": "sqlite_checkpoint_failed"}
                )


def _checkpoint(conn: Connection) -> None:
    """Copy the log into the database file without blocking writers; once the log has grown long, also
    restart it; once it is wholly copied but larger than :data:`SQLITE_LOG_LIMIT_BYTES`, empty it.

    Under steady writes a passive copy never leaves the log empty (a commit lands during every copy),
    so the log is never restarted and only grows; SQLite's own size threshold then made the committing
    writer copy it, holding every waiting request for 15 to 40 ms every few seconds. A RESTART holds
    the write lock while it copies the frames left and syncs the file (about 10 to 20 ms here), so it
    runs only past :data:`SQLITE_RESTART_FRAMES`. A restarted log is reused from its start, and cut back
    to the limit by the next writer (``journal_size_limit``). After a burst the log is copied but not
    restarted, and would keep its size while the server runs: a TRUNCATE then empties it, with nothing
    left to copy. With no busy handler neither ever waits: if a reader or a writer is in the way, a later
    round does it."""
    busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    if frames < SQLITE_RESTART_FRAMES:
        if not busy and frames == copied and frames * SQLITE_FRAME_BYTES > SQLITE_LOG_LIMIT_BYTES:
            _without_waiting(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
        return
    # A long copy lets many commits land meanwhile: copy those too without the lock, so that the
    # restart holds it only for the few frames of the last moments.
    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    _without_waiting(conn, "PRAGMA wal_checkpoint(RESTART)")


def _without_waiting(conn: Connection, statement: str) -> None:
    conn.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        conn.exec_driver_sql(statement).one()
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so writes can ask for BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A safety net only: the background checkpointer keeps the log far below this many pages.
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_LOG_LIMIT_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def _transaction(plain: Connection, pipelined: bool) -> Iterator[Connection]:
    """A write transaction on ``plain``; ``pipelined``: in psycopg's pipeline mode (see
    :meth:`Database.write`), where the COMMIT travels with the statements still queued."""
    conn = plain.execution_options(**{WRITE_OPTION: True})
    raw = conn.connection.driver_connection
    if not (pipelined and isinstance(raw, psycopg.Connection) and psycopg.Pipeline.is_supported()):
        with conn.begin():
            yield conn
        return
    with raw.pipeline() as pipeline, conn.begin():
        try:
            yield conn
        except BaseException:
            # The statements queued after a refused one come back as "aborted". Collect them first, so
            # that the rollback starts from an empty pipeline and the refusal is the error reported.
            with contextlib.suppress(psycopg.Error):
                pipeline.sync()
            raise
