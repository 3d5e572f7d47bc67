"""deliveries remember the deadline they were due at

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifier_deliveries") as batch_op:
        batch_op.add_column(sa.Column("due_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifier_deliveries") as batch_op:
        batch_op.drop_column("due_at")
