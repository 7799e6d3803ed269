"""retries.from_status: what a retry started from, a failed artifact or a stuck one

Before, only failed artifacts could be retried, so every retry stored before this revision started from
"failed".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("from_status", sa.String(length=16), nullable=False, server_default="failed")
        )
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.alter_column("from_status", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.drop_column("from_status")
