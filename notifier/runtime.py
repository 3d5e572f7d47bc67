"""Per-process resources, created on first use after the worker forks: engine, Redis, renderer, channels."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from notifier.config import Settings, get_settings
from notifier.db import get_engine
from notifier.enums import Channel
from notifier.redis_conn import client_for, resolve_url
from notifier.store import Store

if TYPE_CHECKING:
    from notifier.channels.base import EmailTarget, PushTarget, Sender
    from notifier.channels.webpush import PushPayload
    from notifier.render import RenderedEmail, Renderer
    from notifier.sending import Lanes


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    store: Store
    _renderer: Renderer | None = None
    _senders: dict[Channel, Sender[Any, Any]] = field(default_factory=dict)
    _lanes: Lanes | None = None
    # Deliveries run on several threads of one process (notifier.sending): what is built lazily is built once.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def push_enabled(self) -> bool:
        return bool(self.settings.vapid_private_key)

    def renderer(self) -> Renderer:
        with self._lock:
            if self._renderer is None:
                from notifier.render import Renderer

                self._renderer = Renderer(self.settings.templates_dir)
            return self._renderer

    def sender(self, channel: Channel) -> Sender[Any, Any]:
        """The channel's sender, built on first use in this process and kept (connections are reused)."""
        with self._lock:
            if channel not in self._senders:
                from notifier.channels import build_sender
                from notifier.metrics import TimedSender

                self._senders[channel] = TimedSender(build_sender(channel, self.settings))
            return self._senders[channel]

    def lanes(self) -> Lanes:
        """This process's sending lanes (`notifier.sending`), one thread pool per remote server."""
        with self._lock:
            if self._lanes is None:
                from notifier.sending import Lanes

                self._lanes = Lanes(self.settings.max_in_flight_per_host)
            return self._lanes

    def email_sender(self) -> Sender[EmailTarget, RenderedEmail]:
        sender: Sender[EmailTarget, RenderedEmail] = self.sender(Channel.EMAIL)
        return sender

    def push_sender(self) -> Sender[PushTarget, PushPayload]:
        sender: Sender[PushTarget, PushPayload] = self.sender(Channel.WEBPUSH)
        return sender

    def close(self) -> None:
        lanes, self._lanes = self._lanes, None
        if lanes is not None:
            lanes.close()  # running sends finish first: their connections are closed below
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or get_settings()
    return Runtime(settings, get_engine(settings.database_url), Store(client_for(resolve_url(settings), timeout=5.0)))


_runtime: tuple[int, Runtime] | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), build_runtime())
    return _runtime[1]


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    if _runtime is not None and runtime is not _runtime[1]:
        _runtime[1].close()
    _runtime = None if runtime is None else (os.getpid(), runtime)
