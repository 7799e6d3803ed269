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
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from voicemon.domain.counters import COUNTER_NAMES
from voicemon.domain.snapshot_layout import SNAPSHOT_COLUMNS

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
    Column("event_id", String(ID), nullable=False),
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
    # Integer microseconds: sums are exact whatever the order (the given value, rounded to 1 µs).
    Column("duration_us", BigInteger),
    Column("previous_status", String(16)),
    Column("new_status", String(16)),
    Column("error_message", Text),
    Column("error_code", String(ID)),
    Column("metadata", Text),
    Column("cost_nusd", BigInteger, nullable=False),
    # confidence_score in parts per billion, for exact sums.
    Column("confidence_ppb", BigInteger),
    Column("claim_count", BigInteger),
    Column("entity_count", BigInteger),
    Column("draft_count", BigInteger),
    # The duplicate guard. It holds the partition key because PostgreSQL partitions events by day of
    # ts_ms (migration 0009; the primary key there is (seq, ts_ms)). It cannot tell apart two copies the
    # server stamped itself; the check before the insert can (decision 0033).
    UniqueConstraint("event_id", "ts_ms"),
    Index(None, "ts_ms", "seq"),
    Index(None, "artifact_id", "ts_ms"),
    Index(None, "organization_id", "ts_ms"),
)

# An artifact is named by (owner, artifact_id): owner is its organization_id, or "" for none, so that
# two organizations using one id never share, see or block an artifact (decision 0012).
artifacts = Table(
    "artifacts",
    metadata,
    Column("owner", String(ID), primary_key=True),
    Column("artifact_id", String(ID), primary_key=True),
    Column("organization_id", String(ID)),
    Column("voice_note_id", String(ID)),
    Column("coach_user_id", String(ID)),
    Column("source_channel", String(ID)),
    Column("status", String(16), nullable=False),
    Column("status_at_ms", BigInteger),
    Column("current_stage", String(32)),
    # The time of the event that set current_stage (later-arriving older events may still set it).
    Column("stage_at_ms", BigInteger),
    Column("failed_stage", String(32)),
    Column("last_error_code", String(ID)),
    Column("last_error_message", Text),
    # The time of the failure event that gave last_error_code and last_error_message.
    Column("error_at_ms", BigInteger),
    Column("received_at_ms", BigInteger),
    Column("completed_at_ms", BigInteger),
    Column("first_event_at_ms", BigInteger, nullable=False),
    Column("last_event_at_ms", BigInteger, nullable=False),
    Column("listed_at_ms", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("total_cost_nusd", BigInteger, nullable=False),
    Column("stage_started", Text, nullable=False),
    Index(None, "listed_at_ms", "artifact_id", "owner"),
    Index(None, "organization_id", "listed_at_ms", "artifact_id"),
    Index(None, "status", "listed_at_ms", "artifact_id", "owner"),
    # Requests name an artifact by id alone; this finds it in every organization.
    Index(None, "artifact_id"),
)

COUNTER_COLUMNS = COUNTER_NAMES

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

# One row per (period type, period start, scope), scope "" = platform-wide. Additive parts only, the
# columns of the declared snapshot fields (voicemon.domain.snapshot_fields): counts and exact integer sums
# in BIGINT, and the latency sketches: the stages' packed in one binary column, the end-to-end one in its
# own (the organization breakdown reads only that one).
snapshots = Table(
    "snapshots",
    metadata,
    Column("period_type", String(8), primary_key=True),
    Column("period_start_ms", BigInteger, primary_key=True),
    Column("scope", String(ID), primary_key=True),
    Column("computed_ms", BigInteger, nullable=False),
    *(Column(c.name, LargeBinary if c.binary else BigInteger, nullable=False) for c in SNAPSHOT_COLUMNS),
    Index(None, "period_type", "scope", "period_start_ms"),
)

# Late-data bookkeeping: ingestion bumps ``version`` of every hour and day it adds events to; an
# aggregation records the version it read. A period needs work when it was never aggregated or when
# version > aggregated_version.
period_versions = Table(
    "period_versions",
    metadata,
    Column("period_type", String(8), primary_key=True),
    Column("period_start_ms", BigInteger, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("aggregated_version", BigInteger),
)

# Every job run, scheduled or by hand. (name, scheduled_for_ms) is unique among scheduled runs, so each
# tick is inserted once however many schedulers race for it.
job_runs = Table(
    "job_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("scheduled_for_ms", BigInteger, nullable=False),
    Column("target_ms", BigInteger),
    Column("status", String(16), nullable=False),
    Column("owner", String(64)),
    Column("lease_until_ms", BigInteger),
    Column("started_ms", BigInteger),
    Column("finished_ms", BigInteger),
    Column("summary", Text),
    Column("error", Text),
    Index(
        "uq_job_runs_scheduled_tick",
        "name",
        "scheduled_for_ms",
        unique=True,
        sqlite_where=text("trigger = 'schedule'"),
        postgresql_where=text("trigger = 'schedule'"),
    ),
    Index(None, "status", "scheduled_for_ms"),
    Index(None, "name", "scheduled_for_ms"),
)

# Retry records (SPEC 9). At most one retry of an artifact is in flight (partial unique index), and
# attempts are numbered once per artifact (unique). Kept as long as artifact summaries, beyond raw events.
retries = Table(
    "retries",
    metadata,
    Column("retry_id", String(36), primary_key=True),
    Column("owner", String(ID), nullable=False),
    Column("artifact_id", String(ID), nullable=False),
    Column("stage", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("reason", Text),
    Column("status", String(16), nullable=False),
    # What the retry started from: "failed" or "stuck" (SPEC 9).
    Column("from_status", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("dispatched_ms", BigInteger),
    Column("finished_ms", BigInteger),
    Column("error", Text),
    UniqueConstraint("owner", "artifact_id", "attempt"),
    Index(
        "uq_retries_in_flight",
        "owner",
        "artifact_id",
        unique=True,
        sqlite_where=text("status IN ('pending', 'dispatched')"),
        postgresql_where=text("status IN ('pending', 'dispatched')"),
    ),
    Index(None, "created_ms"),
)

# Commands to deliver after commit (transactional outbox). ``next_attempt_ms`` doubles as the claim: a
# worker that takes an entry pushes it into the future by a lease, so no other worker takes it meanwhile,
# and an entry whose worker died comes due again.
outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", SeqType, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("ref_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("finished_ms", BigInteger),
    Column("last_error", Text),
    Index(None, "status", "next_attempt_ms"),
)

# The artifact list's moves (SPEC 7, decision 0024). An artifact is listed by ``listed_at_ms``, which
# changes when its receipt, or an older event, arrives after it was first listed. Each such write records
# the place the artifact left, under the list version that moved it, so a cursor taken at an earlier
# version goes on listing it at the place it had then: never twice, never skipped. Kept as long as the
# artifact's summary.
artifact_moves = Table(
    "artifact_moves",
    metadata,
    Column("owner", String(ID), primary_key=True),
    Column("artifact_id", String(ID), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("from_listed_at_ms", BigInteger, nullable=False),
    Index(None, "version"),
)

# One row per list with moves (only "artifacts" so far): its version, bumped by every write that moves
# rows of it. The bump holds the row's lock until the commit, so versions commit in their order and a
# read that sees version v sees every move up to v and none after it.
list_versions = Table(
    "list_versions",
    metadata,
    Column("list_name", String(32), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# Alerts (SPEC 14). At most one open alert (firing or acknowledged) per fingerprint (rule, scope, stage):
# a partial unique index, so two evaluations racing cannot both open one. scope "" is the platform and
# stage "" a rule without stages. value and threshold are always finite.
alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("rule", String(32), nullable=False),
    Column("scope", String(ID), nullable=False),
    Column("stage", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("last_evaluated_ms", BigInteger, nullable=False),
    Column("last_evaluation", String(20), nullable=False),
    Column("acknowledged_ms", BigInteger),
    Column("acknowledged_by", String(200)),
    Column("ack_note", Text),
    Column("resolved_ms", BigInteger),
    # The Alertmanager silence that stands for the acknowledgement, while there is one.
    Column("silence_id", String(64)),
    Column("silence_ends_ms", BigInteger),
    Column("silence_severity", String(16)),
    Index(
        "uq_alerts_open",
        "rule",
        "scope",
        "stage",
        unique=True,
        sqlite_where=text("state IN ('firing', 'acknowledged')"),
        postgresql_where=text("state IN ('firing', 'acknowledged')"),
    ),
    Index(None, "started_ms"),
    Index(None, "resolved_ms"),
)

# Each change of an alert's state: fired, escalated, acknowledged, resolved; with the value and threshold
# of the evaluation that caused it, or who acknowledged it and their note.
alert_transitions = Table(
    "alert_transitions",
    metadata,
    Column("transition_id", SeqType, primary_key=True, autoincrement=True),
    Column("alert_id", String(36), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("actor", String(200)),
    Column("note", Text),
    Index(None, "alert_id"),
)

# How each notification of an alert went, per channel, once its outbox entry settled.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("delivery_id", SeqType, primary_key=True, autoincrement=True),
    Column("alert_id", String(36), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("notification", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("error", Text),
    Index(None, "alert_id"),
)

# Consecutive breaching or clear evaluations of a fingerprint, kept only while one of them matters: a
# breach streak not yet long enough to fire, or the streak of an open alert.
alert_streaks = Table(
    "alert_streaks",
    metadata,
    Column("rule", String(32), primary_key=True),
    Column("scope", String(ID), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("breaches", Integer, nullable=False),
    Column("clears", Integer, nullable=False),
)

# Rule configurations that differ from the defaults, and every change made to one (who, when, before,
# after; JSON of RuleConfig.to_dict()).
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("rule", String(32), primary_key=True),
    Column("config", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("updated_by", String(200), nullable=False),
)
alert_rule_changes = Table(
    "alert_rule_changes",
    metadata,
    Column("change_id", SeqType, primary_key=True, autoincrement=True),
    Column("rule", String(32), nullable=False),
    Column("changed_ms", BigInteger, nullable=False),
    Column("changed_by", String(200), nullable=False),
    Column("before", Text, nullable=False),
    Column("after", Text, nullable=False),
    Index(None, "rule", "changed_ms"),
)

# One row per evaluator ("alerts"): an evaluation updates it first in its write transaction, so two
# evaluations at once take turns and each decides from what the other committed.
evaluators = Table(
    "evaluators",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("evaluated_ms", BigInteger, nullable=False),
)
