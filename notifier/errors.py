"""One root error; subclasses say what the caller should do (retry, stop, fix configuration)."""


class NotifierError(Exception):
    """Root of every error this product raises on purpose."""


class ConfigError(NotifierError):
    """A setting is missing or malformed; the message names the variable."""


class InvalidInput(NotifierError, ValueError):
    """A caller passed something we refuse (bad ids, malformed subscription, forbidden endpoint)."""


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
