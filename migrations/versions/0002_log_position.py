"""yjs_documents.log_position: exactly-once writes from the Redis log

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("yjs_documents") as batch_op:
        batch_op.add_column(
            sa.Column("log_position", sa.String(length=48), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("yjs_documents") as batch_op:
        batch_op.drop_column("log_position")
