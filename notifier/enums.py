"""Names that travel through the database, logs and Flower: enums, never bare strings."""

from enum import StrEnum


class Channel(StrEnum):
    WEBPUSH = "webpush"
    EMAIL = "email"


class Action(StrEnum):
    NOTIFY = "notify"
    SKIP = "skip"


class Reason(StrEnum):
    """Why a recipient was (or was not) notified; stored with every decision."""

    UNREAD = "unread"  # notified: unread past the deadline
    ESCALATED = "escalated"  # notified by email after push went unanswered
    READ = "read"
    ANSWERED = "answered"
    AI_HANDLING = "ai_handling"
    DIALOG_ENDED = "dialog_ended"
    ONLINE = "online"
    TENANT_GUARD = "tenant_guard"
    INACTIVE = "inactive"
    NO_ADDRESS = "no_address"
    ALREADY_NOTIFIED = "already_notified"
    NO_DIALOG = "no_dialog"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # claimed in the ledger, not yet sent
    SENDING = "sending"  # a worker holds the lease and is sending
    SENT = "sent"
    FAILED = "failed"  # permanent error or retries exhausted
    GONE = "gone"  # push subscription removed by the push service
    CANCELLED = "cancelled"  # read or answered before it went out


class Relation(StrEnum):
    """How a recipient relates to the dialog's tenant."""

    ASSIGNED = "assigned"
    OWNER = "owner"
    TEAM = "team"
