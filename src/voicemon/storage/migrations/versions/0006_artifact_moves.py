"""artifact_moves and list_versions: where an artifact was listed before its place changed

An artifact is listed by the time it was received, or first seen while no receipt has arrived; a receipt
or an older event arriving later moves it. Cursors now carry the list version they started at and list
every artifact at its place as of that version (decision 0024). Nothing moved before this revision is
known, so the tables start empty; a cursor handed out before it is refused (400 ``invalid_cursor``: its
format changed), and its holder starts the list again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_moves",
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("artifact_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("from_listed_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "artifact_id", "version", name="pk_artifact_moves"),
    )
    op.create_index("ix_artifact_moves_version", "artifact_moves", ["version"])
    op.create_table(
        "list_versions",
        sa.Column("list_name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("list_name", name="pk_list_versions"),
    )


def downgrade() -> None:
    op.drop_table("list_versions")
    op.drop_index("ix_artifact_moves_version", table_name="artifact_moves")
    op.drop_table("artifact_moves")
