"""alerts, their transitions, deliveries and streaks; rule configurations and their changes (SPEC 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = "state IN ('firing', 'acknowledged')"


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_evaluated_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_evaluation", sa.String(length=20), nullable=False),
        sa.Column("acknowledged_ms", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("resolved_ms", sa.BigInteger(), nullable=True),
        sa.Column("silence_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
    )
    op.create_index(
        "uq_alerts_open",
        "alerts",
        ["rule", "scope", "stage"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index("ix_alerts_started_ms", "alerts", ["started_ms"])
    op.create_index("ix_alerts_resolved_ms", "alerts", ["resolved_ms"])
    op.create_table(
        "alert_transitions",
        sa.Column("transition_id", SEQ, autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("transition_id", name="pk_alert_transitions"),
    )
    op.create_index("ix_alert_transitions_alert_id", "alert_transitions", ["alert_id"])
    op.create_table(
        "alert_deliveries",
        sa.Column("delivery_id", SEQ, autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("notification", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_alert_deliveries"),
    )
    op.create_index("ix_alert_deliveries_alert_id", "alert_deliveries", ["alert_id"])
    op.create_table(
        "alert_streaks",
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("breaches", sa.Integer(), nullable=False),
        sa.Column("clears", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "scope", "stage", name="pk_alert_streaks"),
    )
    op.create_table(
        "alert_rules",
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("rule", name="pk_alert_rules"),
    )
    op.create_table(
        "alert_rule_changes",
        sa.Column("change_id", SEQ, autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("changed_ms", sa.BigInteger(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name="pk_alert_rule_changes"),
    )
    op.create_index("ix_alert_rule_changes_rule_changed_ms", "alert_rule_changes", ["rule", "changed_ms"])
    op.create_table(
        "evaluators",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("evaluated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_evaluators"),
    )


def downgrade() -> None:
    op.drop_table("evaluators")
    op.drop_index("ix_alert_rule_changes_rule_changed_ms", table_name="alert_rule_changes")
    op.drop_table("alert_rule_changes")
    op.drop_table("alert_rules")
    op.drop_table("alert_streaks")
    op.drop_index("ix_alert_deliveries_alert_id", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alert_transitions_alert_id", table_name="alert_transitions")
    op.drop_table("alert_transitions")
    op.drop_index("ix_alerts_resolved_ms", table_name="alerts")
    op.drop_index("ix_alerts_started_ms", table_name="alerts")
    op.drop_index("uq_alerts_open", table_name="alerts")
    op.drop_table("alerts")
