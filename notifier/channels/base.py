"""The one shape every channel has: `send(target, rendered) -> DeliveryResult`, raising our errors.

`Sender[TargetT, RenderedT]` says what a channel carries, so no sender checks its arguments' types at run
time: `Sender[EmailTarget, RenderedEmail]` for email, `Sender[PushTarget, PushPayload]` for Web Push.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from notifier.enums import Channel


@dataclass(frozen=True)
class EmailTarget:
    address: str
    name: str | None
    # Stable per ledger row, so a retry after an ambiguous timeout carries the same Message-ID.
    message_id: str
    # RFC 8058 one-click unsubscribe (List-Unsubscribe + List-Unsubscribe-Post); None leaves them out.
    unsubscribe_url: str | None = None


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


TargetT = TypeVar("TargetT", contravariant=True)
RenderedT = TypeVar("RenderedT", contravariant=True)


class Sender(Protocol[TargetT, RenderedT]):
    @property
    def channel(self) -> Channel: ...

    def send(self, target: TargetT, rendered: RenderedT) -> DeliveryResult:
        """Deliver or raise TransientError / PermanentError / SubscriptionGone."""
        ...

    def close(self) -> None: ...
