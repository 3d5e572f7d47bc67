"""A real SMTP server for the tests (aiosmtpd on loopback) that keeps what it receives and can refuse.

With `delay`, every reply after the greeting (EHLO, MAIL, RCPT, DATA's 354, the end of data, QUIT) waits
that long first, as a mail server one network round trip away would: an `asyncio.sleep` in the session's
own coroutine, so concurrent sessions wait side by side and only the delayed connection is held up. It keeps
aiosmtpd's defaults otherwise (no PIPELINING is advertised).

In its own process, as a sink for benchmarks (control over stdin, see tests/control.py):

    python -m tests.smtpserver --delay 0.02
    -> {"ready": true, "port": 12345, "pid": 4242}
    stats   {"sessions", "messages", "refusals", "cpu_s"}
    dump    the stats plus "messages": [{"mail_from", "rcpt_tos", "at", "size"}] in arrival order
    reset   forget every message (and scripted refusals)
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

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


class _DelayedSMTP(SMTP):
    """aiosmtpd's session, each reply after the greeting sent `delay` seconds late (one per reply: the
    continuation lines of a multi-line EHLO answer go out with its last line)."""

    def __init__(self, handler: Any, delay: float, on_connect: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._delay, self._on_connect, self._greeted = delay, on_connect, False

    def connection_made(self, transport: Any) -> None:
        self._on_connect()
        super().connection_made(transport)

    async def push(self, status: Any) -> None:
        line = status if isinstance(status, str) else status.decode("ascii", "replace")
        if self._greeted and self._delay > 0 and line[3:4] != "-":
            await asyncio.sleep(self._delay)  # this session's coroutine only
        self._greeted = True
        await super().push(status)


class _Controller(Controller):
    def __init__(self, server: SmtpServer, **kwargs: Any) -> None:
        self._server = server
        super().__init__(_Handler(server), **kwargs)

    def factory(self) -> SMTP:
        # aiosmtpd 1.4 and later keep the session's arguments in SMTP_kwargs; 1.2 in server_kwargs.
        kwargs = getattr(self, "SMTP_kwargs", None) or getattr(self, "server_kwargs", None) or {}
        return _DelayedSMTP(self.handler, self._server.delay, self._server._connected, **kwargs)


class SmtpServer:
    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self.refusals = 0
        self._refuse: list[str] = []
        self.sessions = 0
        self._stalls: list[float] = []
        self.stalls_started = 0
        self.controller = _Controller(self, hostname="127.0.0.1", port=self.port)

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

    def _connected(self) -> None:
        with self._lock:
            self.sessions += 1

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


def main(argv: list[str] | None = None) -> int:
    from tests.control import serve_stdin

    parser = argparse.ArgumentParser(prog="python -m tests.smtpserver", description="an SMTP sink on loopback")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every reply after the greeting")
    args = parser.parse_args(argv)
    server = SmtpServer(delay=args.delay).start()

    def stats(_args: list[str]) -> dict[str, Any]:
        with server._lock:
            return {"sessions": server.sessions, "messages": len(server.messages), "refusals": server.refusals,
                    "cpu_s": time.process_time()}

    def dump(_args: list[str]) -> dict[str, Any]:
        with server._lock:
            got = [{"mail_from": m.mail_from, "rcpt_tos": list(m.rcpt_tos), "at": m.at, "size": len(m.raw)}
                   for m in server.messages]
        return {**stats([]), "messages": got}

    def reset(_args: list[str]) -> dict[str, Any]:
        server.reset()
        return stats([])

    try:
        serve_stdin({"port": server.port, "pid": os.getpid(), "delay": server.delay},
                    {"stats": stats, "dump": dump, "reset": reset})
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
