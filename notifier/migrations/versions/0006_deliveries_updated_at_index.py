"""an index on deliveries' updated_at, for retention's bounded deletes

Revision ID: 0006
Revises: 0005

Retention deletes finished deliveries older than NOTIFIER_RETENTION_DAYS a thousand at a time, oldest
first; this index finds each batch without scanning the table. On a large PostgreSQL table, building it
blocks writes to notifier_deliveries while it runs: run `notifier init-db` in a quiet moment, or create
the index by hand first with CREATE INDEX CONCURRENTLY under the same name (this revision then skips it).
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "ix_notifier_deliveries_updated_at"


def upgrade() -> None:
    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("notifier_deliveries")}
    if INDEX not in existing:
        op.create_index(INDEX, "notifier_deliveries", ["updated_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="notifier_deliveries")
