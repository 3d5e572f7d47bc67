"""One root error; subclasses say what the caller should do (retry, stop, fix configuration or input).

    NotifierError
    ├── ConfigError          a setting is missing or malformed (the message names the variable)
    ├── InvalidInput         a caller passed something we refuse (the message names the argument)
    ├── Unavailable          the database or Redis cannot be reached: try the whole operation again later
    ├── DeliveryError        a channel could not deliver
    │   ├── TransientError   retry with backoff, bounded by NOTIFIER_MAX_ATTEMPTS
    │   └── PermanentError   record the failure and stop
    │       └── SubscriptionGone   the push service says the subscription no longer exists: delete it
    └── DeliveryFailed       raised by the deliver task after a delivery was recorded as failed (Flower shows it)

Library errors (SQLAlchemy, redis-py) are turned into `Unavailable` in one place, `notifier.outages`.
"""


class NotifierError(Exception):
    """Root of every error this product raises on purpose."""


class ConfigError(NotifierError):
    """A setting is missing or malformed; the message names the variable."""


class InvalidInput(NotifierError, ValueError):
    """A caller passed something we refuse (bad ids, malformed subscription, forbidden endpoint)."""


class Unavailable(NotifierError):
    """A service we depend on (`service`: "database" or "redis") is unreachable right now."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service} unavailable: {detail}")
        self.service = service


class DeliveryError(NotifierError):
    """A channel could not deliver."""


class TransientError(DeliveryError):
    """Try again later, with backoff; `retry_after` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Retrying cannot help: record the failure and stop."""


class SubscriptionGone(PermanentError):
    """The push service says this subscription no longer exists (404/410): delete it."""


class DeliveryFailed(NotifierError):
    """A delivery ended as failed (recorded in the ledger); raised so task monitors show a failure."""
