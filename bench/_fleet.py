"""What bench.deliver and bench.latency share: the delayed sinks, a database with recipients, real workers.

Everything comes from the tests' parts: the SMTP sink (`tests.smtpserver`) and the push service in sink mode
(`tests.pushservice --sink`, HTTPS) each in its own process, `tests.support.RedisServer`, `tests.procs.WorkerProc`
and `tests.procs.worker_env`. Recipient `i` owns dialog `i`, has the address `r<i>@bench.test` and one push
subscription at `<sink>/push/r<i>`, so the sinks' dumps count per recipient.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text

from tests.control import ServiceProc
from tests.procs import WorkerProc, worker_env
from tests.support import RedisServer

PG_ADMIN_URL = os.environ.get("NOTIFIER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DOMAIN = "bench.test"
VAPID_SUBJECT = "mailto:bench@bench.test"
INSERT_CHUNK = 1000


def recipient_email(i: int) -> str:
    return f"r{i}@{DOMAIN}"


def recipient_of_email(address: str) -> int | None:
    local, _, domain = address.partition("@")
    return int(local[1:]) if domain == DOMAIN and local[:1] == "r" and local[1:].isdigit() else None


def recipient_of_push(name: str) -> int | None:
    return int(name[1:]) if name[:1] == "r" and name[1:].isdigit() else None


@dataclass
class Sinks:
    """The SMTP sink and the push sink, each in its own process, each delaying every reply."""

    smtp: ServiceProc
    push: ServiceProc
    smtp_delay: float
    push_delay: float

    @property
    def push_origin(self) -> str:
        return str(self.push.ready["origin"])

    @property
    def cert_file(self) -> str:
        return str(self.push.ready["cert_file"])

    def reset(self) -> None:
        self.smtp.command("reset")
        self.push.command("reset")

    def counts(self) -> tuple[int, int]:
        """(mails, pushes) received so far."""
        return int(self.smtp.command("stats")["messages"]), int(self.push.command("stats")["pushes"])

    def close(self) -> None:
        self.smtp.close()
        self.push.close()


def start_sinks(smtp_delay: float, push_delay: float) -> Sinks:
    smtp = ServiceProc("tests.smtpserver", "--delay", str(smtp_delay))
    try:
        push = ServiceProc("tests.pushservice", "--sink", "--delay", str(push_delay))
    except Exception:
        smtp.close()
        raise
    return Sinks(smtp, push, smtp_delay, push_delay)


@contextlib.contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A new database with the host's tables and ours (as `notifier init-db` leaves them); dropped afterwards."""
    from notifier import host
    from notifier.db import dispose, normalize_url
    from notifier.migrate import upgrade

    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="bench-db-"))
        url = f"sqlite:///{folder / 'bench.sqlite3'}"
        admin = None
    else:
        name = f"notifier_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(normalize_url(url))
    try:
        host.host_metadata.create_all(engine)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        dispose(url)
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
            admin.dispose()


def engine_for(url: str) -> Engine:
    from notifier.db import normalize_url

    return create_engine(normalize_url(url), pool_size=4)


def host_now() -> dt.datetime:
    """What the host writes into its timestamp columns: naive UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), INSERT_CHUNK):
        yield rows[i : i + INSERT_CHUNK]


def seed_recipients(engine: Engine, ids: range, push_origin: str) -> None:
    """Per id: a user, a dialog they own in handoff (needs a human), one push subscription (valid keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from notifier import host, models
    from notifier.pushkeys import validate_subscription
    from tests.pushservice import b64url

    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    keys = {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}
    # Stored exactly as the kit's save_subscription would store them (checked once, inserted in bulk).
    valid = validate_subscription({"endpoint": f"{push_origin}/push/r{ids[0]}", "keys": keys}, ("127.0.0.1",))
    now, started = time.time(), host_now()
    users = [dict(id=i, email=recipient_email(i), first_name="Ирина", role="user", status="active",
                  is_email_confirmed=True) for i in ids]
    dialogs = [dict(id=i, user_id=i, guest_id=f"guest-{i}", first_name="Анна", last_name="Петрова", started_at=started,
                    is_taken_over=0, handoff_status="requested") for i in ids]
    subs = [dict(manager_id=i, endpoint=f"{push_origin}/push/r{i}", p256dh=valid.p256dh, auth=valid.auth,
                 user_agent="bench", created_at=now, updated_at=now) for i in ids]
    with engine.begin() as conn:
        for table, rows in ((host.users, users), (host.dialogs, dialogs), (models.push_subscriptions, subs)):
            for chunk in _chunks(rows):
                conn.execute(insert(table), chunk)


def insert_messages(engine: Engine, rows: list[tuple[int, int, str]]) -> None:
    """Visitor messages (id, dialog id, text), as the host commits them."""
    from notifier import host

    at = host_now()
    values = [dict(id=m, dialog_id=d, sender="user", text=t, timestamp=at, message_kind="text") for m, d, t in rows]
    with engine.begin() as conn:
        for chunk in _chunks(values):
            conn.execute(insert(host.dialog_messages), chunk)


def schedule_due(redis_url: str, pairs: list[tuple[int, int]], seen_at: float, grace: float) -> float:
    """Open each dialog's check with `seen_at` (what schedule_fallback would have recorded then): the Store's
    own script, pipelined. Returns the deadline, `seen_at + grace`."""
    import redis

    from notifier.store import SCHEDULE_LUA, schedule_args, schedule_keys

    r: Any = redis.Redis.from_url(redis_url)
    try:
        script = r.register_script(SCHEDULE_LUA)
        for i in range(0, len(pairs), INSERT_CHUNK):
            pipe = r.pipeline(transaction=False)
            for dialog_id, message_id in pairs[i : i + INSERT_CHUNK]:
                script(keys=schedule_keys(dialog_id), args=schedule_args(dialog_id, message_id, seen_at, grace), client=pipe)
            pipe.execute()
    finally:
        r.close()
    return seen_at + grace


def worker_settings(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    """`--set NAME=VALUE` arguments: settings for the workers beyond the benchmark's own (for instance
    NOTIFIER_MAX_IN_FLIGHT_PER_HOST=32). Only NOTIFIER_* names; SystemExit with the reason otherwise."""
    out: list[tuple[str, str]] = []
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("NOTIFIER_") or not name[len("NOTIFIER_"):].replace("_", "").isalnum():
            raise SystemExit(f"--set takes NOTIFIER_NAME=VALUE, got {item!r}")
        out.append((name, value))
    return tuple(out)


def fleet_env(db_url: str, redis_url: str, sinks: Sinks, folder: Path, **overrides: str) -> dict[str, str]:
    """The workers' settings: the tests' environment with the product's own leases and retry timings (no
    test shortcuts), push on (VAPID key, the sink's host allowed), the sink's certificate trusted."""
    from notifier.pushkeys import generate_vapid_keys

    private, _public = generate_vapid_keys()
    env = worker_env(db_url, redis_url, sinks.smtp.port, folder, **{
        "NOTIFIER_VAPID_PRIVATE_KEY": private,
        "NOTIFIER_VAPID_SUBJECT": VAPID_SUBJECT,
        "NOTIFIER_PUSH_ALLOWED_HOSTS": "127.0.0.1",
        "NOTIFIER_EMAIL_FROM": f"ReplyX <noreply@{DOMAIN}>",
        "REQUESTS_CA_BUNDLE": sinks.cert_file,  # requests reads it per request; nothing skips verification
        **overrides,
    })
    for name in ("NOTIFIER_DISPATCH_INTERVAL_SECONDS", "NOTIFIER_RECONCILE_INTERVAL_SECONDS",
                 "NOTIFIER_RECONCILE_MARGIN_SECONDS", "NOTIFIER_CHECK_LEASE_SECONDS", "NOTIFIER_SEND_LEASE_SECONDS",
                 "NOTIFIER_RETRY_BASE_SECONDS"):
        if name not in overrides:
            env.pop(name, None)  # the product's defaults
    return env


@dataclass
class Fleet:
    """The worker processes of one run and how they were laid out."""

    layout: str
    procs: list[WorkerProc] = field(default_factory=list)

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def describe(self) -> str:
        return "\n".join(p.describe(20) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def idle_children(self, markers: dict[str, str]) -> list[str]:
        """The pool processes that have not yet logged a line holding their worker's marker (by worker name,
        e.g. `{"sender": "outcome=sent"}`; INFO lines): a process that has done no work yet."""
        idle = []
        for p in self.procs:
            marker = markers.get(p.name)
            if marker is None:
                continue
            seen = set(re.findall(r"/(ForkPoolWorker-\d+)\][^\n]*" + re.escape(marker), p.log_text()))
            idle += [f"{p.name} process {i + 1}" for i in range((p.concurrency or 1) - len(seen))]
        return idle


def start_fleet(folder: Path, env: dict[str, str], loglevel: str = "info") -> Fleet:
    """As `notifier worker` lays them out: a control worker (queue notifier, beat) and a sending worker
    (queue notifier.send), each prefork with one process per core (2 here)."""
    fleet = Fleet("control (notifier, beat, prefork -c 2) + sender (notifier.send, prefork -c 2)")
    fleet.procs += [
        WorkerProc(folder, env, beat=True, name="control", pool="prefork", concurrency=2, queues="notifier",
                   loglevel=loglevel, quiet=True),
        WorkerProc(folder, env, name="sender", pool="prefork", concurrency=2, queues="notifier.send",
                   loglevel=loglevel, quiet=True),
    ]
    try:
        for p in fleet.procs:
            p.start(wait_ready=False)
        for p in fleet.procs:
            p.wait_ready(timeout=60)
    except Exception:
        fleet.stop()
        raise
    return fleet


def _cpu_of(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backends(db_url: str) -> list[int]:
    """The server processes of PostgreSQL serving `db_url`'s database (none for SQLite)."""
    from notifier.db import normalize_url

    if not db_url.startswith("postgresql"):
        return []
    admin = create_engine(normalize_url(PG_ADMIN_URL))  # the server fresh_database made the database on
    try:
        with admin.connect() as conn:
            rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :db"),
                                {"db": db_url.rsplit("/", 1)[1]}).scalars()
            return [int(pid) for pid in rows]
    finally:
        admin.dispose()


@dataclass
class CpuMeter:
    """CPU used by each part of a run (the worker processes with their pool children, each sink, the
    database's server processes), read from /proc between `start` and `stop`. A process that appears
    meanwhile (a new database connection) counts from zero; one that ends meanwhile is not counted."""

    fleet: Fleet
    sinks: Sinks
    db_url: str
    _start: dict[int, float] = field(default_factory=dict)
    _at: float = 0.0

    def _groups(self) -> dict[str, list[int]]:
        groups = {p.name: [p.pid, *p.children()] for p in self.fleet.procs if p.alive()}
        groups["SMTP sink"] = [self.sinks.smtp.pid]
        groups["push sink"] = [self.sinks.push.pid]
        groups["PostgreSQL"] = _backends(self.db_url)
        return groups

    def start(self) -> None:
        self._at = time.monotonic()
        self._start = {pid: cpu for pids in self._groups().values() for pid in pids if (cpu := _cpu_of(pid)) is not None}

    def stop(self) -> tuple[float, dict[str, float]]:
        """(seconds since start, CPU seconds per part)."""
        used: dict[str, float] = {}
        for name, pids in self._groups().items():
            used[name] = sum(max(0.0, cpu - self._start.get(pid, 0.0)) for pid in pids if (cpu := _cpu_of(pid)) is not None)
        return time.monotonic() - self._at, used


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    server = RedisServer(folder / "redis").start()
    try:
        yield server.url
    finally:
        server.stop(kill=True)
