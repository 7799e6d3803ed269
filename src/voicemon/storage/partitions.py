"""The daily partitions of ``events`` on PostgreSQL (SPEC 19): list them, create one, drop one.

``events`` is range-partitioned on ``ts_ms`` (migration 0009), with a default partition for events whose
day has none yet. Each call runs inside the caller's write transaction and takes the maintenance lock
first, so two workers never change the partitions at once. It waits at most :data:`LOCK_TIMEOUT` for
the table locks: while it waits, new readers and writers of ``events`` queue behind it, so a long read
(an export) must not hold ingest up for longer than that. The caller tries again a little later.

Lock use: creating a partition builds it as a plain table, moves into it the rows the default partition
holds for its day, and attaches it, which takes ``SHARE UPDATE EXCLUSIVE`` on ``events`` and an exclusive
lock on the default partition. Ingest reads the default partition (its duplicate check cannot skip it),
so it waits for that moment; the move is of the few rows that arrived before their day's partition
(usually none). Dropping one counts its rows under a lock on that partition alone, then takes an
exclusive lock on ``events`` while the table goes: writers and readers wait for that moment.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

from voicemon.domain.partitions import DEFAULT_PARTITION, Partition, is_partition_name, missing, name_of

# A constant key for pg_advisory_xact_lock: "partition maintenance of events".
_MAINTENANCE_LOCK = 0x766D_6576_7470  # "vmevtp"
LOCK_TIMEOUT = "1s"
_BOUNDS = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


def is_partitioned(conn: Connection) -> bool:
    """True when ``events`` is a partitioned table (PostgreSQL from migration 0009 on)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = 'events'::regclass")).scalar_one()
    return bool(kind == "p")


def _maintenance(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MAINTENANCE_LOCK})
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


def list_partitions(conn: Connection) -> list[Partition]:
    """The day partitions of ``events``, oldest first (the default partition is not one of them)."""
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
        )
    )
    found = []
    for name, bound in rows:
        match = _BOUNDS.fullmatch(bound)
        if match is not None and is_partition_name(name):
            found.append(Partition(int(match[1]), int(match[2]), name))
    return sorted(found)


def create_partition(conn: Connection, day_ms: int, end_ms: int) -> int | None:
    """Create the partition of ``[day_ms, end_ms)``, moving into it the rows the default partition holds
    for that range; returns how many moved, or None when the day has its partition already."""
    _maintenance(conn)
    if not missing([day_ms], list_partitions(conn)):
        return None
    name = name_of(day_ms)
    conn.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    moved = conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts_ms >= :lo AND ts_ms < :hi"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        {"lo": day_ms, "hi": end_ms},
    ).rowcount
    conn.execute(text(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({day_ms}) TO ({end_ms})"))
    return int(moved or 0)


def drop_partition(conn: Connection, partition: Partition) -> int:
    """Drop one day partition; returns how many events it held. They are counted while the partition
    alone is locked against writes (readers go on); ``events`` itself is locked only for the DROP."""
    _maintenance(conn)
    if partition not in list_partitions(conn):
        return 0
    conn.execute(text(f"LOCK TABLE {partition.name} IN SHARE MODE"))
    held = conn.execute(text(f"SELECT count(*) FROM {partition.name}")).scalar_one()
    conn.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"DROP TABLE {partition.name}"))
    return int(held)
