"""Minute counters: one upsert per changed (scope, minute), and window sums."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from voicemon.domain.counters import BucketDelta
from voicemon.storage.dialect import send_many, upsert_add_sql
from voicemon.storage.tables import COUNTER_COLUMNS, minute_counters


def add_to_buckets(conn: Connection, deltas: Sequence[BucketDelta]) -> None:
    if not deltas:
        return
    # Sorted so that concurrent writers lock buckets in one order.
    rows = [
        (d.scope, d.minute_ms, *(d.counts[name] for name in COUNTER_COLUMNS))
        for d in sorted(deltas, key=lambda d: (d.scope, d.minute_ms))
    ]
    send_many(conn, _ADD_SQL, rows)


_ADD_SQL = upsert_add_sql(minute_counters, ("scope", "minute_ms"), tuple(COUNTER_COLUMNS))


def window_sums(conn: Connection, scope: str, first_minute_ms: int, last_minute_ms: int) -> dict[str, int]:
    """Sum of every counter over the minute buckets in ``[first_minute_ms, last_minute_ms]``."""
    c = minute_counters.c
    query = select(*(func.coalesce(func.sum(c[name]), 0) for name in COUNTER_COLUMNS)).where(
        c.scope == scope, c.minute_ms >= first_minute_ms, c.minute_ms <= last_minute_ms
    )
    row = conn.execute(query).one()
    return {name: int(value) for name, value in zip(COUNTER_COLUMNS, row, strict=True)}
