"""Where SQLite and PostgreSQL differ, in SQL: the one module that asks which database it talks to.

Everything else in ``storage/`` writes one statement for both and calls these when they cannot agree:

- **Row locks.** PostgreSQL runs concurrent writers, so a read-modify-write locks its rows
  (``FOR UPDATE``) and a claim skips rows another worker holds (``FOR UPDATE SKIP LOCKED``). SQLite has one
  writer at a time: :meth:`~voicemon.storage.database.Database.write` starts with ``BEGIN IMMEDIATE``,
  which already makes every write exclusive. :func:`locks_rows` and :func:`claim_lock` say which.
- **Upserts** (:func:`insert_ignore`, :func:`upsert_replace`): each dialect's own ``ON CONFLICT``.
- **The ingest fast path**: fixed SQL through the driver's cursor (``?`` marks, ``%s`` for psycopg), key
  lists as one array parameter on PostgreSQL and as chunked ``IN`` lists on SQLite, and integers joined
  by a GROUP BY (binary on PostgreSQL, text on SQLite).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import BigInteger, Connection, Insert, LargeBinary, Select, Table, cast, func, literal
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")
S = TypeVar("S", bound=Select[Any])


def locks_rows(conn: Connection) -> bool:
    """True on PostgreSQL, where concurrent writers must lock the rows they read to change; False on
    SQLite, where the write transaction itself is exclusive."""
    return conn.dialect.name == "postgresql"


def claim_lock(query: S, conn: Connection) -> S:
    """``query`` as a claim: on PostgreSQL its rows are locked and rows another worker has locked are
    skipped, so two workers claim different rows at once; on SQLite, unchanged."""
    return query.with_for_update(skip_locked=True) if locks_rows(conn) else query


def insert_ignore(conn: Connection, table: Table, keys: Sequence[str], where: Any = None) -> Insert:
    """INSERT that skips rows whose unique ``keys`` already exist (``where``: of a partial unique index)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys), index_where=where)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys), index_where=where)


def upsert_replace(conn: Connection, table: Table, keys: Sequence[str], columns: Sequence[str]) -> Insert:
    """INSERT, or overwrite the given columns of the existing row with the same ``keys``."""
    return _upsert_replace(conn.dialect.name, table, tuple(keys), tuple(columns))


@functools.cache
def _upsert_replace(dialect: str, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Insert:
    """Built once per shape: statements are immutable."""
    stmt: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    assignments = {name: stmt.excluded[name] for name in columns}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=assignments)  # type: ignore[no-any-return]


# --- The driver's own cursor: the ingest hot path -----------------------------------------------------------
# A single-event commit runs about eight fixed statements. Through SQLAlchemy each cost more Python time
# (building, caching, result wrapping) than the database took to run it, so the ingest path sends its
# fixed SQL straight to the driver: written with ``?`` marks, which become ``%s`` for psycopg.


def driver_cursor(conn: Connection) -> Any:
    """A cursor of the driver, inside the connection's current transaction."""
    raw = conn.connection.driver_connection
    assert raw is not None
    return raw.cursor()


@functools.cache
def _marks(dialect: str, sql: str) -> str:
    return sql.replace("?", "%s") if dialect == "postgresql" else sql


def send_many(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once per row (the driver's executemany). In a pipelined write it is only queued."""
    if rows:
        driver_cursor(conn).executemany(_marks(conn.dialect.name, sql), rows)


Answer = Callable[[], T]
"""The answer to a query already sent: calling it waits for the rows (at once, if they are there)."""


def ask_keys(conn: Connection, sql: str, keys: Sequence[str]) -> Answer[list[tuple[Any, ...]]]:
    """Send a query in which ``{keys}`` stands for "the column is one of ``keys``"; returns the function
    that waits for its rows. In a pipelined write, several queries sent before the first wait travel
    together.

    On PostgreSQL the keys are one array parameter (``= ANY(%s)``) and the statement is not prepared,
    so it is planned for these very keys. The driver prepares a statement run often, and the server
    then reuses a generic plan: with a long list it cannot hash the list, and on a young table it
    compared every row with every key (0.4 s a batch was measured at 60 000 events). On SQLite the keys
    go in ``IN (?, ...)`` lists of at most :data:`SQLITE_IN_CHUNK`."""
    if not keys:
        return list
    if conn.dialect.name == "postgresql":
        cur = driver_cursor(conn)
        cur.execute(sql.format(keys="= ANY(%s)"), [list(keys)], prepare=False)
        return cur.fetchall  # type: ignore[no-any-return]
    rows: list[tuple[Any, ...]] = []
    cur = driver_cursor(conn)
    for i in range(0, len(keys), SQLITE_IN_CHUNK):
        chunk = keys[i : i + SQLITE_IN_CHUNK]
        rows.extend(cur.execute(sql.format(keys=f"IN ({', '.join('?' * len(chunk))})"), chunk).fetchall())
    return lambda: rows


def ask_pairs(conn: Connection, sql: str, pairs: Sequence[tuple[str, str]]) -> Answer[list[tuple[Any, ...]]]:
    """Like :func:`ask_keys`, for a two-column key: ``{keys}`` stands for "the pair of columns before it
    is one of ``pairs``" (write ``(a, b) {keys}``). On PostgreSQL the pairs are two array parameters
    zipped by ``unnest``; on SQLite, ``VALUES`` lists of row values."""
    if not pairs:
        return list
    cur = driver_cursor(conn)
    if conn.dialect.name == "postgresql":
        firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
        cur.execute(
            sql.format(keys="IN (SELECT * FROM unnest(%s::text[], %s::text[]))"),
            [firsts, seconds],
            prepare=False,
        )
        return cur.fetchall  # type: ignore[no-any-return]
    rows: list[tuple[Any, ...]] = []
    step = SQLITE_IN_CHUNK
    for i in range(0, len(pairs), step):
        chunk = pairs[i : i + step]
        values = ", ".join("(?, ?)" for _ in chunk)
        params = [v for pair in chunk for v in pair]
        rows.extend(cur.execute(sql.format(keys=f"IN (VALUES {values})"), params).fetchall())
    return lambda: rows


def insert_sql(table: Table, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@functools.cache
def upsert_add_sql(table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """INSERT (keys, then columns), or add the columns' values onto the row with the same keys. The
    same text runs on SQLite and PostgreSQL."""
    adds = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in columns)
    return f"{insert_sql(table, [*keys, *columns])} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}"


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """A plain INSERT of many rows (tuples in ``columns`` order) through the driver's executemany."""
    send_many(conn, insert_sql(table, columns), rows)


# SQLite allows 32 766 parameters per statement; chunks stay far below.
SQLITE_IN_CHUNK = 1000


def concat_integers(conn: Connection, column: Any) -> Any:
    """An aggregate that joins a group's non-null integers into one value, read back by
    :func:`integers_of`. PostgreSQL joins them as big-endian 8-byte binary (``int8send``): no text
    formatting on the server and no parsing here. SQLite has no such function: comma-separated text."""
    if conn.dialect.name == "postgresql":
        return func.string_agg(func.int8send(cast(column, BigInteger)), literal(b"", LargeBinary))
    return func.group_concat(column, ",")


_NO_INTEGERS = np.zeros(0, dtype=np.int64)


def integers_of(joined: str | bytes | None) -> NDArray[np.int64]:
    """The integers of one :func:`concat_integers` value (None: the group had none)."""
    if not joined:
        return _NO_INTEGERS
    if isinstance(joined, str):
        return np.array(joined.split(","), dtype=np.int64)
    return np.frombuffer(joined, dtype=">i8").astype(np.int64)
