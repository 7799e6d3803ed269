"""artifacts.stage_at_ms: the time of the event that set current_stage

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage_at_ms", sa.BigInteger(), nullable=True))
    # Rows written before: their stage was set with their status, as far as anyone can tell now.
    op.execute("UPDATE artifacts SET stage_at_ms = status_at_ms WHERE current_stage IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_column("stage_at_ms")
