"""A real SMTP server for the tests (aiosmtpd on loopback) that keeps what it receives and can refuse."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        return self.server._accept(envelope)


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self.refusals = 0
        self._refuse: list[str] = []
        self.sessions = 0
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self._refuse.clear()
            self.refusals = 0

    def refuse_next(self, count: int, reply: str = "421 4.3.2 Service not available, try later") -> None:
        with self._lock:
            self._refuse.extend([reply] * count)

    def _accept(self, envelope: Any) -> str:
        with self._lock:
            if self._refuse:
                self.refusals += 1
                return self._refuse.pop(0)
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)
