"""alerts.silence_ends_ms, alerts.silence_severity: the Alertmanager silence of an acknowledgement;
alert_deliveries.channel widened to hold the Alertmanager channel's name

With ``silence_id``, the new columns say which silence stands for an acknowledged alert in Alertmanager,
until when it runs (it is extended while the alert stays open), and for which severity label it was made
(an escalation changes the alert's labels). ``alert_alertmanager`` is 18 characters.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("silence_ends_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("silence_severity", sa.String(length=16), nullable=True))
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "channel", existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "channel", existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=False
        )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("silence_severity")
        batch_op.drop_column("silence_ends_ms")
