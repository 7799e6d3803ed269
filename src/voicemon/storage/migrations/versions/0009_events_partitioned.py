"""events: unique on (event_id, ts_ms); on PostgreSQL, range-partitioned by day on ts_ms

PostgreSQL cannot keep a unique index across partitions unless it holds the partition key, so the
duplicate guard becomes (event_id, ts_ms). Ingest asks for stored ids by event_id alone, across every
partition, after taking the locks that make that check exact (decision 0033), so an id sent again is
a duplicate whatever its timestamp. SQLite, one writer at a time, gets the same constraint so that both
databases declare one schema.

On PostgreSQL every row is copied into the partitioned table: one partition for each day the old table
holds, and the default partition for days that have none yet (the ``partition-events`` job creates
them ahead, and moves out of the default partition whatever landed there). The sequence of ``seq`` moves
to the new table, so new events keep counting up from the old ones.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DAY_MS = 86_400_000
INDEXES = {
    "ix_events_artifact_id_ts_ms": "artifact_id, ts_ms",
    "ix_events_organization_id_ts_ms": "organization_id, ts_ms",
    "ix_events_ts_ms_seq": "ts_ms, seq",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("events", schema=None) as batch_op:
            batch_op.drop_constraint("uq_events_event_id", type_="unique")
            batch_op.create_unique_constraint("uq_events_event_id_ts_ms", ["event_id", "ts_ms"])
        return
    op.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    op.execute("ALTER TABLE events_unpartitioned DROP CONSTRAINT uq_events_event_id")
    op.execute("ALTER TABLE events_unpartitioned DROP CONSTRAINT pk_events")
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute(
        "CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS,"
        " CONSTRAINT pk_events PRIMARY KEY (seq, ts_ms),"
        " CONSTRAINT uq_events_event_id_ts_ms UNIQUE (event_id, ts_ms)) PARTITION BY RANGE (ts_ms)"
    )
    op.execute("ALTER SEQUENCE events_seq_seq OWNED BY events.seq")
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON events ({columns})")
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    days = op.get_bind().execute(
        sa.text("SELECT DISTINCT ts_ms / :day FROM events_unpartitioned"), {"day": DAY_MS}
    )
    for (day,) in days.all():
        start = day * DAY_MS
        name = "events_p" + datetime.fromtimestamp(start / 1000, UTC).strftime("%Y%m%d")
        op.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({start}) TO ({start + DAY_MS})")
    op.execute("INSERT INTO events SELECT * FROM events_unpartitioned")
    op.execute("DROP TABLE events_unpartitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("events", schema=None) as batch_op:
            batch_op.drop_constraint("uq_events_event_id_ts_ms", type_="unique")
            batch_op.create_unique_constraint("uq_events_event_id", ["event_id"])
        return
    op.execute("ALTER TABLE events RENAME TO events_partitioned")
    op.execute("ALTER TABLE events_partitioned DROP CONSTRAINT uq_events_event_id_ts_ms")
    op.execute("ALTER TABLE events_partitioned DROP CONSTRAINT pk_events")
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute(
        "CREATE TABLE events (LIKE events_partitioned INCLUDING DEFAULTS,"
        " CONSTRAINT pk_events PRIMARY KEY (seq), CONSTRAINT uq_events_event_id UNIQUE (event_id))"
    )
    op.execute("ALTER SEQUENCE events_seq_seq OWNED BY events.seq")
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON events ({columns})")
    op.execute("INSERT INTO events SELECT * FROM events_partitioned")
    op.execute("DROP TABLE events_partitioned")
