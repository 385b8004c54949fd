"""gateway indexes: one asset per (project, name); projects of a user

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch_op:
        batch_op.create_index("uq_assets_project_id_name", ["project_id", "name"], unique=True)
    with op.batch_alter_table("project_members") as batch_op:
        batch_op.create_index("ix_project_members_user_id", ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("project_members") as batch_op:
        batch_op.drop_index("ix_project_members_user_id")
    with op.batch_alter_table("assets") as batch_op:
        batch_op.drop_index("uq_assets_project_id_name")
