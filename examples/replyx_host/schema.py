"""The host's tables as ReplyX declares them (the columns this example uses), with ReplyX's production
indexes (its alembic revisions 66ea5c9e3d91 and 165e5d314eaf). Note what is absent: no index on
`dialog_messages.dialog_id` alone, none on `dialogs.assigned_manager_id` or `dialogs.is_taken_over`."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String, nullable=False),
    Column("first_name", String),
    Column("role", String),
    Column("status", String),
    Column("is_email_confirmed", Boolean),
    Column("last_activity", DateTime),
    Index("ix_users_email", "email", unique=True),
)

assistants = Table(
    "assistants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("name", String),
)

dialogs = Table(
    "dialogs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("assistant_id", Integer, ForeignKey("assistants.id")),
    Column("guest_id", String),
    Column("first_name", String),
    Column("last_name", String),
    Column("telegram_username", String),
    Column("started_at", DateTime),
    Column("ended_at", DateTime),
    Column("is_taken_over", Integer),
    Column("handoff_status", String, nullable=False),
    Column("handoff_requested_at", DateTime),
    Column("assigned_manager_id", Integer, ForeignKey("users.id")),
    Index("ix_dialogs_guest_id", "guest_id"),
    Index("idx_dialogs_user_started", "user_id", "started_at"),
    Index("idx_dialogs_handoff_status", "handoff_status", "handoff_requested_at"),
    Index("idx_dialogs_assistant_created", "assistant_id", "started_at"),
)

dialog_messages = Table(
    "dialog_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dialog_id", Integer, ForeignKey("dialogs.id")),
    Column("sender", String),
    Column("text", Text, nullable=False),
    Column("timestamp", DateTime),
    Column("message_kind", String, nullable=False),
    Column("system_type", String),
    Index("idx_dialog_messages_dialog_timestamp", "dialog_id", "timestamp"),
    Index("idx_dialog_messages_kind_timestamp", "message_kind", "timestamp"),
    Index("idx_dialog_messages_sender_timestamp", "sender", "timestamp"),
)
