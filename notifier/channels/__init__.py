"""Channels, registered in one explicit mapping (no import side effects), built lazily.

Public: `build_email_sender(settings)`, `build_push_sender(settings)`, `build_sender(channel, settings)`,
`SENDERS`, and the shapes in `notifier.channels.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from notifier.channels.base import DeliveryResult, EmailTarget, PushTarget, Sender
from notifier.config import Settings
from notifier.enums import Channel
from notifier.errors import InvalidInput

if TYPE_CHECKING:
    from notifier.channels.webpush import PushPayload
    from notifier.render import RenderedEmail

__all__ = [
    "SENDERS",
    "DeliveryResult",
    "EmailTarget",
    "PushTarget",
    "Sender",
    "build_email_sender",
    "build_push_sender",
    "build_sender",
]


def build_email_sender(settings: Settings) -> Sender[EmailTarget, RenderedEmail]:
    from notifier.channels.email import build_email_sender as build

    return build(settings)


def build_push_sender(settings: Settings) -> Sender[PushTarget, PushPayload]:
    from notifier.channels.webpush import WebPushSender

    return WebPushSender(settings)


SENDERS: Mapping[Channel, Callable[[Settings], Sender[Any, Any]]] = {
    Channel.EMAIL: build_email_sender,
    Channel.WEBPUSH: build_push_sender,
}


def build_sender(channel: Channel, settings: Settings) -> Sender[Any, Any]:
    try:
        return SENDERS[channel](settings)
    except KeyError:
        raise InvalidInput(f"channel must be one of {', '.join(SENDERS)}, got {channel!r}") from None
