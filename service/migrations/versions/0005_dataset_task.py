"""Uploaded data sets say what they are for: classification (class folders) or segmentation
(images/ + masks/); every set stored before is a classification set.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 23:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task", sa.String(length=32), server_default="classification", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("task")
