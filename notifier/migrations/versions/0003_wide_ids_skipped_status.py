"""64-bit ids everywhere; delivery outcome `skipped` with a reason

Revision ID: 0003
Revises: 0002

Any id a caller may pass (up to 2**63 - 1) can now be recorded, so a bogus dialog id ends as a clear
`no_dialog` decision instead of a database error. Delivery statuses become pending, sending, sent, failed,
skipped: `cancelled` rows become `skipped` and `gone` rows `failed`, each with its reason kept.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WIDENED = {
    "notifier_team_members": ("owner_id", "user_id"),
    "notifier_preferences": ("manager_id",),
    "notifier_read_pointers": ("dialog_id", "manager_id", "message_id"),
    "notifier_push_subscriptions": ("id", "manager_id"),
    "notifier_decisions": ("id", "dialog_id", "manager_id", "burst_floor", "first_message_id", "last_message_id"),
    "notifier_deliveries": ("id", "dialog_id", "manager_id", "burst_floor", "first_message_id", "last_message_id"),
    "notifier_dialog_checks": ("dialog_id", "covered_up_to"),
}


def upgrade() -> None:
    with op.batch_alter_table("notifier_deliveries") as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
    if op.get_bind().dialect.name != "sqlite":  # SQLite's INTEGER is 64-bit already
        for table, columns in WIDENED.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    deliveries = sa.table("notifier_deliveries", sa.column("status", sa.String), sa.column("reason", sa.String),
                          sa.column("last_error", sa.Text))
    op.execute(deliveries.update().where(deliveries.c.status == "cancelled")
               .values(status="skipped", reason=sa.func.substr(deliveries.c.last_error, 1, 32)))
    op.execute(deliveries.update().where(deliveries.c.status == "gone")
               .values(status="failed", reason="subscription_gone"))


def downgrade() -> None:
    deliveries = sa.table("notifier_deliveries", sa.column("status", sa.String), sa.column("reason", sa.String))
    op.execute(deliveries.update().where(deliveries.c.reason == "subscription_gone").values(status="gone"))
    op.execute(deliveries.update().where(deliveries.c.status == "skipped").values(status="cancelled"))
    if op.get_bind().dialect.name != "sqlite":
        for table, columns in WIDENED.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
    with op.batch_alter_table("notifier_deliveries") as batch_op:
        batch_op.drop_column("reason")
