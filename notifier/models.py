"""Our own tables (prefix `notifier_`), beside the host's; their history lives in notifier/migrations.

Times are stored as UTC epoch seconds (double precision): one representation on SQLite and PostgreSQL,
and immune to the host's mix of naive-UTC and Moscow timestamps.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Ids of the host's rows, and our own keys: 64-bit, so any id a caller may pass (up to 2**63 - 1) can be
# recorded. SQLite's INTEGER is already 64-bit and its rowid alias must be spelled INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

team_members = Table(
    "notifier_team_members",
    metadata,
    Column("owner_id", Id, primary_key=True),
    Column("user_id", Id, primary_key=True),
    Column("created_at", Double, nullable=False),
)

# One row per manager; NULL in any column means "the default" (notifier.preferences.resolve_preferences).
preferences = Table(
    "notifier_preferences",
    metadata,
    Column("manager_id", Id, primary_key=True),
    Column("language", String(8), nullable=True),
    Column("push", Boolean, nullable=True),
    Column("email", Boolean, nullable=True),
    Column("time_zone", String(64), nullable=True),
    Column("quiet_start", String(5), nullable=True),  # "HH:MM", both or neither
    Column("quiet_end", String(5), nullable=True),
    Column("updated_at", Double, nullable=False),
)

muted_dialogs = Table(
    "notifier_muted_dialogs",
    metadata,
    Column("manager_id", Id, primary_key=True),
    Column("dialog_id", Id, primary_key=True),
)

read_pointers = Table(
    "notifier_read_pointers",
    metadata,
    Column("dialog_id", Id, primary_key=True),
    Column("manager_id", Id, primary_key=True),
    Column("message_id", Id, nullable=False),
    Column("updated_at", Double, nullable=False),
)

push_subscriptions = Table(
    "notifier_push_subscriptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("manager_id", Id, nullable=False, index=True),
    Column("endpoint", String(2048), nullable=False, unique=True),
    Column("p256dh", String(128), nullable=False),
    Column("auth", String(64), nullable=False),
    Column("user_agent", String(512), nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

decisions = Table(
    "notifier_decisions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("dialog_id", Id, nullable=False),
    Column("manager_id", Id, nullable=True),
    Column("action", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("channel", String(16), nullable=True),
    Column("burst_floor", Id, nullable=False, default=0),
    Column("first_message_id", Id, nullable=True),
    Column("last_message_id", Id, nullable=True),
    Column("created_at", Double, nullable=False),
    Index("ix_notifier_decisions_dialog_id_id", "dialog_id", "id"),
    Index("ix_notifier_decisions_created_at", "created_at"),
)

deliveries = Table(
    "notifier_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("dialog_id", Id, nullable=False),
    Column("manager_id", Id, nullable=False),
    Column("channel", String(16), nullable=False),
    # '' for email; the push subscription id for push, one ledger row per browser.
    Column("target", String(64), nullable=False, default=""),
    Column("burst_floor", Id, nullable=False),
    Column("first_message_id", Id, nullable=False),
    Column("last_message_id", Id, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # PENDING: not retried before `not_before`; re-enqueued by the sweeper once `lease_until` passes.
    # SENDING: the worker's claim expires at `lease_until`, then another worker may take it over.
    Column("due_at", Double, nullable=True),  # the deadline the delivery was due at (lateness = sent - due)
    Column("not_before", Double, nullable=True),
    Column("lease_until", Double, nullable=True),
    # For SKIPPED: the send-time Reason; for FAILED: a FailReason. The error text stays in last_error.
    Column("reason", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("message_ref", String(255), nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("sent_at", Double, nullable=True),
    Column("cleared_at", Double, nullable=True),  # push only: when a "clear" push followed it (read/answered)
    UniqueConstraint("dialog_id", "manager_id", "channel", "target", "burst_floor", name="uq_notifier_delivery_key"),
    Index("ix_notifier_deliveries_status_lease", "status", "lease_until"),
    Index("ix_notifier_deliveries_updated_at", "updated_at"),  # retention's batches (migration 0006)
)

# Per dialog, the newest visitor message whose check reached final decisions for every recipient.
dialog_checks = Table(
    "notifier_dialog_checks",
    metadata,
    Column("dialog_id", Id, primary_key=True),
    Column("covered_up_to", Id, nullable=False),
    Column("checked_at", Double, nullable=False),
)
