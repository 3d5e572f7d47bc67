"""Channels, registered in one explicit mapping (no import side effects).

Public: `build_sender(channel, settings)`, and the shapes in `notifier.channels.base`.
"""

from __future__ import annotations

from notifier.channels.base import DeliveryResult, EmailTarget, PushTarget, Sender
from notifier.config import Settings
from notifier.enums import Channel

__all__ = ["DeliveryResult", "EmailTarget", "PushTarget", "Sender", "build_sender"]


def build_sender(channel: Channel, settings: Settings) -> Sender:
    if channel is Channel.EMAIL:
        from notifier.channels.email import build_email_sender

        return build_email_sender(settings)
    if channel is Channel.WEBPUSH:
        from notifier.channels.webpush import WebPushSender

        return WebPushSender(settings)
    raise ValueError(f"unknown channel {channel!r}")
