"""SQLAlchemy Core tables. Times are BIGINT epoch milliseconds (UTC by construction); money is nano-USD.

Migrations in ``migrations/versions`` create exactly these tables; a test runs ``alembic check`` to keep
the two in step.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

ID = 128

events = Table(
    "events",
    metadata,
    # Arrival-ordered surrogate key: appends stay at the right edge of the primary index.
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("event_type", String(40), nullable=False),
    Column("artifact_id", String(ID)),
    Column("organization_id", String(ID)),
    Column("voice_note_id", String(ID)),
    Column("coach_user_id", String(ID)),
    Column("pipeline_stage", String(32)),
    Column("ts_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("stage_started_at_ms", BigInteger),
    Column("stage_completed_at_ms", BigInteger),
    Column("duration_ms", Float),
    Column("previous_status", String(16)),
    Column("new_status", String(16)),
    Column("error_message", Text),
    Column("error_code", String(ID)),
    Column("metadata", Text),
    Column("cost_nusd", BigInteger, nullable=False),
    Column("confidence", Float),
    Column("claim_count", BigInteger),
    Column("entity_count", BigInteger),
    Column("draft_count", BigInteger),
    Index(None, "ts_ms", "seq"),
    Index(None, "artifact_id", "ts_ms"),
    Index(None, "organization_id", "ts_ms"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("artifact_id", String(ID), primary_key=True),
    Column("organization_id", String(ID)),
    Column("voice_note_id", String(ID)),
    Column("coach_user_id", String(ID)),
    Column("source_channel", String(ID)),
    Column("status", String(16), nullable=False),
    Column("status_at_ms", BigInteger),
    Column("current_stage", String(32)),
    Column("failed_stage", String(32)),
    Column("last_error_code", String(ID)),
    Column("last_error_message", Text),
    Column("received_at_ms", BigInteger),
    Column("completed_at_ms", BigInteger),
    Column("first_event_at_ms", BigInteger, nullable=False),
    Column("last_event_at_ms", BigInteger, nullable=False),
    Column("listed_at_ms", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("total_cost_nusd", BigInteger, nullable=False),
    Column("stage_started", Text, nullable=False),
    Index(None, "listed_at_ms", "artifact_id"),
    Index(None, "organization_id", "listed_at_ms", "artifact_id"),
    Index(None, "status", "listed_at_ms", "artifact_id"),
)

COUNTER_COLUMNS = (
    "artifacts_received",
    "artifacts_completed",
    "artifacts_failed",
    "transcriptions_completed",
    "claims_extracted",
    "entities_resolved",
    "drafts_generated",
    "failures",
    "ai_cost_nusd",
)

# One row per (scope, minute); scope "" is platform-wide.
minute_counters = Table(
    "minute_counters",
    metadata,
    Column("scope", String(ID), primary_key=True),
    Column("minute_ms", BigInteger, primary_key=True),
    *(Column(name, BigInteger, nullable=False) for name in COUNTER_COLUMNS),
    Index(None, "minute_ms"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200)),
    Column("role", String(16), nullable=False),
    Column("organization_id", String(ID)),
    Column("secret_hash", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
)

orgs = Table(
    "orgs",
    metadata,
    Column("organization_id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
