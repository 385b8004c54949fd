"""eXeLearning: assets addressed by its content-hash client id; projects remember their first save

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("client_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("folder_path", sa.String(length=1024), nullable=False, server_default="")
        )
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("saved_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "uq_assets_project_id_client_id", "assets", ["project_id", "client_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_assets_project_id_client_id", table_name="assets")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("saved_at")
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("folder_path")
        batch.drop_column("client_id")
