"""The one shape every channel has: `send(target, rendered) -> DeliveryResult`, raising our errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from notifier.enums import Channel


@dataclass(frozen=True)
class EmailTarget:
    address: str
    name: str | None
    # Stable per ledger row, so a retry after an ambiguous timeout carries the same Message-ID.
    message_id: str


@dataclass(frozen=True)
class PushTarget:
    subscription_id: int
    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class DeliveryResult:
    ref: str | None = None  # Message-ID, or the push service's Location header
    detail: str = ""


class Sender(Protocol):
    channel: Channel

    def send(self, target: object, rendered: object) -> DeliveryResult:
        """Deliver or raise TransientError / PermanentError / SubscriptionGone."""
        ...

    def close(self) -> None: ...
