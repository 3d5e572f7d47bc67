"""dialog checks: what the reconciler may skip

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifier_dialog_checks",
        sa.Column("dialog_id", sa.Integer(), nullable=False),
        sa.Column("covered_up_to", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("dialog_id", name=op.f("pk_notifier_dialog_checks")),
    )


def downgrade() -> None:
    op.drop_table("notifier_dialog_checks")
