"""The engine, its transactions, and every difference between SQLite and PostgreSQL (in this one module).

Writes use :meth:`Database.write`: on SQLite it starts with ``BEGIN IMMEDIATE`` so the write lock is taken
up front (no deadlock-prone lock upgrade); on PostgreSQL rows are locked with ``FOR UPDATE`` where a
read-modify-write needs it (:func:`lock_for_update`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Select, Table, Text, cast, create_engine, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from voicemon.errors import IntegrityConflict, StorageError

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "voicemon_write"


class Database:
    """Owns the engine. ``read()`` and ``write()`` are the only ways the service layer gets a connection."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError) as exc:
            raise StorageError(f"database read failed: {exc.__class__.__name__}") from exc

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction: everything inside commits together or not at all."""
        try:
            with self.engine.connect() as plain:
                conn = plain.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except IntegrityError as exc:
            raise IntegrityConflict("a unique rule refused the write") from exc
        except (OperationalError, DBAPIError) as exc:
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
        self.engine.dispose()


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
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def insert_ignore(conn: Connection, table: Table, keys: Sequence[str], where: Any = None) -> Insert:
    """INSERT that skips rows whose unique ``keys`` already exist (``where``: of a partial unique index)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys), index_where=where)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys), index_where=where)


def upsert_add(conn: Connection, table: Table, keys: Sequence[str], columns: Sequence[str]) -> Insert:
    """INSERT, or add the given columns' values onto the existing row with the same ``keys``."""
    return _upsert(
        conn, table, keys, lambda stmt: {name: table.c[name] + stmt.excluded[name] for name in columns}
    )


def upsert_replace(conn: Connection, table: Table, keys: Sequence[str], columns: Sequence[str]) -> Insert:
    """INSERT, or overwrite the given columns of the existing row with the same ``keys``."""
    return _upsert(conn, table, keys, lambda stmt: {name: stmt.excluded[name] for name in columns})


def _upsert(
    conn: Connection, table: Table, keys: Sequence[str], assignments: Callable[[Any], dict[str, Any]]
) -> Insert:
    stmt: Any = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=assignments(stmt))  # type: ignore[no-any-return]


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """The driver's own executemany for a plain INSERT of many rows, without per-row work in
    SQLAlchemy (the ingest hot path). Rows are tuples in ``columns`` order."""
    if not rows:
        return
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(sql, list(rows))


def concat_integers(conn: Connection, column: Any) -> Any:
    """An aggregate that joins a group's non-null integers into one comma-separated string."""
    if conn.dialect.name == "postgresql":
        return func.string_agg(cast(column, Text), ",")
    return func.group_concat(column, ",")


def lock_for_update(conn: Connection, query: Select[Any]) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the one write lock."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update()
    return query
