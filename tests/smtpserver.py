"""A real SMTP server for the tests (aiosmtpd on loopback) that keeps what it receives and can refuse."""

from __future__ import annotations

import asyncio
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
    at: float = 0.0  # time.time() when the server accepted it

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

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        delay = self.server._take_stall()
        if delay:
            await asyncio.sleep(delay)  # cancelled by aiosmtpd if the client goes away meanwhile
        # aiosmtpd's own behaviour without a hook:
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

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
        self._stalls: list[float] = []
        self.stalls_started = 0
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
            self._stalls.clear()
            self.stalls_started = 0

    def refuse_next(self, count: int, reply: str = "421 4.3.2 Service not available, try later") -> None:
        with self._lock:
            self._refuse.extend([reply] * count)

    def stall_next(self, count: int, seconds: float) -> None:
        """Hold the next `count` RCPT commands for `seconds` before answering: a mail server that hangs
        before it has accepted anything (the client sees a timeout, or is killed while waiting)."""
        with self._lock:
            self._stalls.extend([seconds] * count)

    def _take_stall(self) -> float:
        with self._lock:
            if not self._stalls:
                return 0.0
            self.stalls_started += 1
            return self._stalls.pop(0)

    def _accept(self, envelope: Any) -> str:
        with self._lock:
            if self._refuse:
                self.refusals += 1
                return self._refuse.pop(0)
            self.messages.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content), time.time())
            )
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
