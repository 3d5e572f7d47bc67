"""The host's tables (ReplyX), read-only. Only the columns we read are declared.

`host_metadata` is separate from ours so migrations never touch the host; tests and the demo use it to
create a host-shaped schema.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, MetaData, String, Table, Text

host_metadata = MetaData()

users = Table(
    "users",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(255)),
    Column("first_name", String(255)),
    Column("role", String(32)),
    Column("status", String(32)),
    Column("is_email_confirmed", Boolean),
    Column("last_activity", DateTime),
)

assistants = Table(
    "assistants",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("name", String(255)),
)

dialogs = Table(
    "dialogs",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("assistant_id", Integer, ForeignKey("assistants.id"), nullable=True),
    Column("guest_id", String(255), nullable=True),
    Column("first_name", String(255), nullable=True),
    Column("last_name", String(255), nullable=True),
    Column("telegram_username", String(255), nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("ended_at", DateTime, nullable=True),
    Column("is_taken_over", Integer, nullable=True),
    Column("handoff_status", String(32), nullable=True),
    Column("handoff_requested_at", DateTime, nullable=True),
    Column("assigned_manager_id", Integer, nullable=True),
)

dialog_messages = Table(
    "dialog_messages",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("dialog_id", Integer, ForeignKey("dialogs.id"), index=True),
    Column("sender", String(32)),
    Column("text", Text),
    Column("timestamp", DateTime),
    Column("message_kind", String(32), nullable=True),
    Column("system_type", String(64), nullable=True),
)
