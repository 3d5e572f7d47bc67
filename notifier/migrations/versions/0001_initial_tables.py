"""initial tables

Revision ID: 0001
Revises: 
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notifier_decisions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dialog_id', sa.Integer(), nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('burst_floor', sa.Integer(), nullable=False),
    sa.Column('first_message_id', sa.Integer(), nullable=True),
    sa.Column('last_message_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifier_decisions'))
    )
    with op.batch_alter_table('notifier_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_notifier_decisions_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_notifier_decisions_dialog_id_id', ['dialog_id', 'id'], unique=False)

    op.create_table('notifier_deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dialog_id', sa.Integer(), nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('burst_floor', sa.Integer(), nullable=False),
    sa.Column('first_message_id', sa.Integer(), nullable=False),
    sa.Column('last_message_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('not_before', sa.Double(), nullable=True),
    sa.Column('lease_until', sa.Double(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('message_ref', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('sent_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifier_deliveries')),
    sa.UniqueConstraint('dialog_id', 'manager_id', 'channel', 'target', 'burst_floor', name='uq_notifier_delivery_key')
    )
    with op.batch_alter_table('notifier_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_notifier_deliveries_status_lease', ['status', 'lease_until'], unique=False)

    op.create_table('notifier_preferences',
    sa.Column('manager_id', sa.Integer(), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('manager_id', name=op.f('pk_notifier_preferences'))
    )
    op.create_table('notifier_push_subscriptions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.String(length=2048), nullable=False),
    sa.Column('p256dh', sa.String(length=128), nullable=False),
    sa.Column('auth', sa.String(length=64), nullable=False),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifier_push_subscriptions')),
    sa.UniqueConstraint('endpoint', name=op.f('uq_notifier_push_subscriptions_endpoint'))
    )
    with op.batch_alter_table('notifier_push_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifier_push_subscriptions_manager_id'), ['manager_id'], unique=False)

    op.create_table('notifier_read_pointers',
    sa.Column('dialog_id', sa.Integer(), nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('dialog_id', 'manager_id', name=op.f('pk_notifier_read_pointers'))
    )
    op.create_table('notifier_team_members',
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'user_id', name=op.f('pk_notifier_team_members'))
    )


def downgrade() -> None:
    op.drop_table('notifier_team_members')
    op.drop_table('notifier_read_pointers')
    with op.batch_alter_table('notifier_push_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifier_push_subscriptions_manager_id'))

    op.drop_table('notifier_push_subscriptions')
    op.drop_table('notifier_preferences')
    with op.batch_alter_table('notifier_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_notifier_deliveries_status_lease')

    op.drop_table('notifier_deliveries')
    with op.batch_alter_table('notifier_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_notifier_decisions_dialog_id_id')
        batch_op.drop_index('ix_notifier_decisions_created_at')

    op.drop_table('notifier_decisions')
