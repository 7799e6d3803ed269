"""artifacts and retries are named by (owner, artifact_id): an artifact belongs to one organization

Before, an artifact id was global: an event of any organization joined the artifact of that id, so one
tenant could change, or read by claiming an id first, another tenant's artifact. Every stored artifact
had one organization already (its first event's), so no two rows collide under the new key; retries take
the owner of their artifact.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=128), nullable=False, server_default=""))
    op.execute("UPDATE artifacts SET owner = COALESCE(organization_id, '')")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.alter_column("owner", server_default=None)
        batch_op.drop_constraint("pk_artifacts", type_="primary")
        batch_op.create_primary_key("pk_artifacts", ["owner", "artifact_id"])
        batch_op.drop_index("ix_artifacts_listed_at_ms_artifact_id")
        batch_op.drop_index("ix_artifacts_status_listed_at_ms_artifact_id")
        batch_op.create_index(
            "ix_artifacts_listed_at_ms_artifact_id_owner", ["listed_at_ms", "artifact_id", "owner"]
        )
        batch_op.create_index(
            "ix_artifacts_status_listed_at_ms_artifact_id_owner",
            ["status", "listed_at_ms", "artifact_id", "owner"],
        )
        batch_op.create_index("ix_artifacts_artifact_id", ["artifact_id"])

    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=128), nullable=False, server_default=""))
    op.execute(
        "UPDATE retries SET owner = COALESCE((SELECT COALESCE(a.organization_id, '') FROM artifacts a"
        " WHERE a.artifact_id = retries.artifact_id), '')"
    )
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.alter_column("owner", server_default=None)
        batch_op.drop_constraint("uq_retries_artifact_id_attempt", type_="unique")
        batch_op.create_unique_constraint(
            "uq_retries_owner_artifact_id_attempt", ["owner", "artifact_id", "attempt"]
        )
        batch_op.drop_index("uq_retries_in_flight")
        batch_op.create_index(
            "uq_retries_in_flight",
            ["owner", "artifact_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'dispatched')"),
            postgresql_where=sa.text("status IN ('pending', 'dispatched')"),
        )


def downgrade() -> None:
    # Going back is refused when two organizations use one id: the old key cannot hold both.
    with op.batch_alter_table("retries", schema=None) as batch_op:
        batch_op.drop_index("uq_retries_in_flight")
        batch_op.create_index(
            "uq_retries_in_flight",
            ["artifact_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'dispatched')"),
            postgresql_where=sa.text("status IN ('pending', 'dispatched')"),
        )
        batch_op.drop_constraint("uq_retries_owner_artifact_id_attempt", type_="unique")
        batch_op.create_unique_constraint("uq_retries_artifact_id_attempt", ["artifact_id", "attempt"])
        batch_op.drop_column("owner")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_artifact_id")
        batch_op.drop_index("ix_artifacts_status_listed_at_ms_artifact_id_owner")
        batch_op.drop_index("ix_artifacts_listed_at_ms_artifact_id_owner")
        batch_op.create_index(
            "ix_artifacts_status_listed_at_ms_artifact_id", ["status", "listed_at_ms", "artifact_id"]
        )
        batch_op.create_index("ix_artifacts_listed_at_ms_artifact_id", ["listed_at_ms", "artifact_id"])
        batch_op.drop_constraint("pk_artifacts", type_="primary")
        batch_op.create_primary_key("pk_artifacts", ["artifact_id"])
        batch_op.drop_column("owner")
