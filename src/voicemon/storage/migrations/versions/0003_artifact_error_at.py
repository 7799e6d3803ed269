"""artifacts.error_at_ms: the time of the failure event that gave the last error

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_at_ms", sa.BigInteger(), nullable=True))
    # Rows written before: their error was set with their status, as far as anyone can tell now.
    op.execute(
        "UPDATE artifacts SET error_at_ms = status_at_ms"
        " WHERE last_error_code IS NOT NULL OR last_error_message IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_column("error_at_ms")
