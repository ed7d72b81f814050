"""Uploaded detection sets (YOLO or COCO layouts) keep their label format and what reading the
labels counted (objects, boxes clipped or skipped); other sets hold none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 02:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boxes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("boxes")
