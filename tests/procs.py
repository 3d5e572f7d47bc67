"""Real processes for the failure tests: Celery workers as subprocesses, a cuttable TCP proxy, a SQLite lock.

    worker = WorkerProc(tmp_path / "w1", worker_env(...), beat=True).start()
    ...
    worker.kill()       # SIGKILL to its whole process group (the embedded beat is a child process)
    print(worker.tail())

Everything here is stopped by its owner's `stop()`; the fixtures in the tests call it even when a test fails.
"""

from __future__ import annotations

import itertools
import os
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Short timings: every wait in the product is seconds, so a scenario (and its "no duplicate" window) fits
# in a few seconds of real time. Lease > grace so a healthy check is never dispatched twice.
FAST_TIMINGS: dict[str, str] = {
    "NOTIFIER_GRACE_SECONDS": "2",
    "NOTIFIER_EMAIL_AFTER_SECONDS": "6",
    "NOTIFIER_DISPATCH_INTERVAL_SECONDS": "0.2",
    "NOTIFIER_RECONCILE_INTERVAL_SECONDS": "1",
    "NOTIFIER_RECONCILE_MARGIN_SECONDS": "1",
    "NOTIFIER_CHECK_LEASE_SECONDS": "4",
    "NOTIFIER_SEND_LEASE_SECONDS": "4",
    "NOTIFIER_RETRY_BASE_SECONDS": "0.5",
    "NOTIFIER_ENVIRONMENT": "development",
}


def worker_env(db_url: str, redis_url: str, smtp_port: int, folder: Path, **overrides: str) -> dict[str, str]:
    """The NOTIFIER_* settings of a test worker (and of the test process that schedules for it)."""
    env = {
        **FAST_TIMINGS,
        "NOTIFIER_DATABASE_URL": db_url,
        "NOTIFIER_REDIS_URL": redis_url,
        "NOTIFIER_REDIS_EMBEDDED_DIR": str(folder / "embedded-redis"),  # unused with a URL; never the repo's var/
        "NOTIFIER_SMTP_HOST": "127.0.0.1",
        "NOTIFIER_SMTP_PORT": str(smtp_port),
        "NOTIFIER_SMTP_TLS": "none",
        "NOTIFIER_SMTP_TIMEOUT_SECONDS": "5",
        "NOTIFIER_EMAIL_FROM": "ReplyX <noreply@replyx.test>",
        "NOTIFIER_OUTBOX_DIR": str(folder / "outbox"),
        "NOTIFIER_DIALOG_URL": "https://app.replyx.test/dialogs?dialog_id={dialog_id}",
    }
    env.update(overrides)
    return env


def child_env(notifier_env: Mapping[str, str]) -> dict[str, str]:
    """os.environ without any NOTIFIER_* of the caller's shell, plus the test's own NOTIFIER_* values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(notifier_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(predicate: Callable[[], T], timeout: float, what: str, diag: Callable[[], str] | None = None,
               interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; AssertionError naming `what` (and `diag()`) if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}" + (f"\n{diag()}" if diag else ""))
        time.sleep(interval)


class WorkerProc:
    """A real `celery -A worker worker` subprocess (queues `notifier` and `notifier.send` unless `queues` says
    otherwise; the solo pool unless `pool` says otherwise,
    e.g. `pool="prefork", concurrency=2`), optionally with embedded beat, without Celery's start-up banner
    (`quiet`), and with extra worker arguments. `app` names another Celery app (a benchmark's baseline).

    It runs in its own session, so `kill()` takes its embedded beat (a forked child) down with it, as a
    machine or container dying would; its output (stdout and stderr) goes to `log_path`.
    """

    _ids = itertools.count(1)

    def __init__(self, folder: Path, env: Mapping[str, str], beat: bool = False, name: str | None = None,
                 loglevel: str = "info", pool: str = "solo", concurrency: int | None = None, quiet: bool = False,
                 extra_args: tuple[str, ...] = (), queues: str = "notifier,notifier.send", app: str = "worker") -> None:
        self.queues = queues
        self.app = app
        self.name = name or f"w{os.getpid()}n{next(self._ids)}"
        self.pool, self.concurrency, self.quiet, self.extra_args = pool, concurrency, quiet, extra_args
        self.folder = folder
        self.env = child_env(env)
        self.beat = beat
        self.loglevel = loglevel
        self.log_path = folder / f"{self.name}.log"
        self.schedule_path = folder / f"{self.name}-celerybeat-schedule"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "celery", "-A", self.app, "worker", "-E", "-P", self.pool, "-Q", self.queues,
            "--without-mingle", "--without-gossip", "-l", self.loglevel, "-n", f"{self.name}@%h",
        ]
        if self.concurrency:
            cmd += ["-c", str(self.concurrency)]
        if self.quiet:
            cmd.insert(cmd.index("-A") + 2, "--quiet")  # a global option of `celery`: before the subcommand
        cmd += list(self.extra_args)
        if self.beat:
            cmd += ["-B", "-s", str(self.schedule_path)]
        return cmd

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> WorkerProc:
        assert self.proc is None, f"{self.name} already started"
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.started_at = time.time()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the consumer is up (`<name>@host ready.`) and, with beat, the embedded beat process runs.

        (The product quiets beat's "Sending due task" lines, so beat is recognised as the child process.)
        """

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited during startup\n{self.describe()}")
            text = self.log_text()
            return f"{self.name}@" in text and " ready." in text and (not self.beat or bool(self.children()))

        wait_until(ready, timeout, f"worker {self.name} to be ready", self.describe, interval=0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """Live child processes (with -B and the solo pool: the embedded beat)."""
        if not self.alive():
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if fields[1] == str(self.pid) and fields[0] != "Z":  # ppid; not a zombie
                found.append(int(stat.parent.name))
        return found

    def _killpg(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the group this worker leads: itself and its beat child
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL, no cleanup of any kind: the worker and its embedded beat vanish mid-whatever."""
        if self.proc is None:
            return
        self._killpg()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL if it takes longer than `timeout`; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._killpg()  # whatever is left of the group (a beat child outliving its parent)
        self.proc.wait(timeout=10)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self, lines: int = 60) -> str:
        state = "running" if self.alive() else f"exited rc={self.returncode}"
        return f"----- worker {self.name} ({state}), last {lines} log lines of {self.log_path} -----\n{self.tail(lines)}"


class TcpProxy:
    """A threaded loopback TCP proxy in front of a server (PostgreSQL) that a test can cut and restore.

    `cut()` stops listening (new connections are refused) and closes every proxied connection on both sides;
    `restore()` listens again on the same port.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._pumps: set[threading.Thread] = set()
        self._accept_stop: threading.Event | None = None
        self._accept_thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._accept_thread is not None

    def start(self) -> TcpProxy:
        assert self._accept_thread is None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(0.05)
        except OSError:
            listener.close()
            raise
        stop = threading.Event()
        thread = threading.Thread(target=self._accept_loop, args=(listener, stop), name="tcpproxy-accept", daemon=True)
        self._accept_stop, self._accept_thread = stop, thread
        thread.start()
        return self

    restore = start

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                pump = threading.Thread(target=self._pump, args=(client, upstream), name="tcpproxy-pump", daemon=True)
                with self._lock:
                    self.accepted += 1
                    self._conns.update((client, upstream))
                    self._pumps.add(pump)
                pump.start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in sel.select(timeout=1.0):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.difference_update((a, b))
                self._pumps.discard(threading.current_thread())
            for s in (a, b):
                s.close()

    def cut(self) -> None:
        """Refuse new connections and drop every open one, as a dead database host would."""
        stop, thread = self._accept_stop, self._accept_thread
        self._accept_stop = self._accept_thread = None
        if stop is not None and thread is not None:
            stop.set()
            thread.join(timeout=5)  # the listener is closed when this returns
        with self._lock:
            conns, pumps = list(self._conns), list(self._pumps)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump, which closes both ends
            except OSError:
                pass
        for pump in pumps:
            pump.join(timeout=5)

    def stop(self) -> None:
        self.cut()


class SqliteWriteLock:
    """Holds SQLite's write lock from another process, as a long migration or a stuck writer would.

    With WAL, readers go on; every writer waits its busy timeout and then fails with `database is locked`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.acquired_at: float | None = None

    def acquire(self) -> SqliteWriteLock:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn, self.acquired_at = conn, time.time()
        return self

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.execute("ROLLBACK")
            finally:
                conn.close()
