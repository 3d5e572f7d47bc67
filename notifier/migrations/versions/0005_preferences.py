"""manager preferences: channels, time zone, quiet hours, muted dialogs; clear-on-read marks

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("notifier_preferences") as batch_op:
        batch_op.add_column(sa.Column("push", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("email", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("quiet_start", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("quiet_end", sa.String(length=5), nullable=True))
    op.create_table(
        "notifier_muted_dialogs",
        sa.Column("manager_id", Id, nullable=False),
        sa.Column("dialog_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("manager_id", "dialog_id", name=op.f("pk_notifier_muted_dialogs")),
    )
    with op.batch_alter_table("notifier_deliveries") as batch_op:
        batch_op.add_column(sa.Column("cleared_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifier_deliveries") as batch_op:
        batch_op.drop_column("cleared_at")
    op.drop_table("notifier_muted_dialogs")
    with op.batch_alter_table("notifier_preferences") as batch_op:
        for column in ("quiet_end", "quiet_start", "time_zone", "email", "push"):
            batch_op.drop_column(column)
