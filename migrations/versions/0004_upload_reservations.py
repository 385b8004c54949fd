"""upload_reservations: open uploads hold their declared bytes against the project quota

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "upload_reservations",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "project_id",
            BigId,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_upload_reservations_project_id", "upload_reservations", ["project_id"])
    op.create_index("ix_upload_reservations_user_id", "upload_reservations", ["user_id"])
    op.create_index("ix_upload_reservations_expires_at", "upload_reservations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("upload_reservations")
