"""Names that travel through the database, logs and Flower: enums, never bare strings."""

from enum import StrEnum


class Channel(StrEnum):
    WEBPUSH = "webpush"
    EMAIL = "email"


class Action(StrEnum):
    NOTIFY = "notify"
    SKIP = "skip"
    HOLD = "hold"  # due, but inside the manager's quiet hours: decided again when they end


class Reason(StrEnum):
    """Why a recipient was (or was not) notified; stored with every decision, at check and at send time."""

    UNREAD = "unread"  # notified: unread past the deadline
    ESCALATED = "escalated"  # notified by email after push went unanswered
    READ = "read"
    ANSWERED = "answered"
    AI_HANDLING = "ai_handling"
    DIALOG_ENDED = "dialog_ended"
    ONLINE = "online"
    MUTED = "muted"  # the manager muted this dialog
    READ_BY_OTHER = "read_by_other"  # another recipient read the whole burst
    QUIET_HOURS = "quiet_hours"  # held until the manager's quiet hours end
    CHANNEL_OFF = "channel_off"  # the manager turned this channel off
    TENANT_GUARD = "tenant_guard"
    NOT_RECIPIENT = "not_recipient"  # no longer a recipient (left the team, handoff reassigned)
    INACTIVE = "inactive"
    NO_ADDRESS = "no_address"
    SUBSCRIPTION_GONE = "subscription_gone"  # the push subscription was deleted
    SUBSCRIPTION_MOVED = "subscription_moved"  # the push subscription now belongs to another manager
    ALREADY_NOTIFIED = "already_notified"
    NO_DIALOG = "no_dialog"
    CHECK_FAILED = "check_failed"  # the check kept raising; parked with its error


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # claimed in the ledger, waiting to be sent (or to be retried after `not_before`)
    SENDING = "sending"  # a worker holds the send lease
    SENT = "sent"
    FAILED = "failed"  # permanent error, subscription gone, or attempts exhausted
    SKIPPED = "skipped"  # the decision made again at send time said no (the reason is kept)


class FailReason(StrEnum):
    """Why a delivery failed; stored beside its last error."""

    PERMANENT_ERROR = "permanent_error"
    SUBSCRIPTION_GONE = "subscription_gone"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"


class Relation(StrEnum):
    """How a recipient relates to the dialog's tenant."""

    ASSIGNED = "assigned"
    OWNER = "owner"
    TEAM = "team"
