"""Fair queue: admin tokens (only they may raise a job's priority), each team's last claim
time (the round-robin turn between teams) and an index for running jobs per team.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 21:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_status_team", ["status", "team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_team")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("last_claimed_at")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("admin")
