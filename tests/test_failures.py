"""Failures with real processes and real time: killed workers, Redis restarts and flushes, a refusing or
hanging mail server, racing workers and beats, a database that goes away.

Every test starts real `celery -A worker worker` subprocesses (tests/procs.py) against a private
redis-server, the suite's database (SQLite or PostgreSQL, NOTIFIER_TEST_DB) and a loopback SMTP server, with
second-scale timings (procs.FAST_TIMINGS). Each asserts how many emails (and pushes) arrive *exactly*, and
keeps watching for SETTLE seconds after the last expected one, the window in which a duplicate would show.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, insert, select
from sqlalchemy.engine import make_url

from notifier import host, models
from notifier.config import load_settings, set_settings
from notifier.pushkeys import generate_vapid_keys
from notifier.redis_conn import reset_clients
from notifier.store import PENDING
from tests.procs import SqliteWriteLock, TcpProxy, WorkerProc, wait_until, worker_env
from tests.pushservice import PushService
from tests.smtpserver import Received, SmtpServer
from tests.support import Host, RedisServer
from worker import client

pytestmark = pytest.mark.slow

GRACE = 2.0  # procs.FAST_TIMINGS
# After the last expected notification, how long we keep watching for a duplicate: a check re-run after its
# lease (4 s), or a delivery taken over after its send lease (4 s), plus a dispatch tick and a send.
SETTLE = 6.0
MESSAGE_ID = re.compile(r"<notifier\.(\d+)\.d(\d+)@replyx\.test>")
TEXT_DIALOG = re.compile(r"message for dialog (\d+)")


class Scene:
    """One test's world: private Redis (AOF on), SMTP server, workers, and the test process's client."""

    def __init__(self, tmp: Path, db_url: str, engine: Engine, stack: ExitStack) -> None:
        self.tmp, self.db_url, self.engine, self.stack = tmp, db_url, engine, stack
        self.host = Host(engine)
        self.redis = RedisServer(tmp / "redis", appendonly=True).start()
        stack.callback(self.redis.stop, kill=True)
        self.smtp = SmtpServer().start()
        stack.callback(self.smtp.stop)
        self.r = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=5)
        stack.callback(self.r.close)
        self.workers: list[WorkerProc] = []
        self.overrides: dict[str, str] = {}
        self._message_ids = itertools.count(10_001)
        self.use()

    # configuration ---------------------------------------------------------------------------------
    def env(self, **overrides: str) -> dict[str, str]:
        return worker_env(self.db_url, self.redis.url, self.smtp.port, self.tmp, **{**self.overrides, **overrides})

    def use(self, **overrides: str) -> None:
        """Settings for this scene (test process and workers started afterwards)."""
        self.overrides.update(overrides)
        set_settings(load_settings(self.env()))
        reset_clients()  # worker.client talks to this scene's private Redis

    def worker(self, beat: bool = True, wait_ready: bool = True, **overrides: str) -> WorkerProc:
        w = WorkerProc(self.tmp / "workers", self.env(**overrides), beat=beat)
        self.workers.append(w)
        self.stack.callback(w.stop, timeout=5)  # even if start() fails half-way
        return w.start(wait_ready=wait_ready)

    # host data -------------------------------------------------------------------------------------
    def tenant(self, owner_id: int, dialog_id: int) -> None:
        """An owner with an email address and a dialog in handoff (needs a human) whose visitor is named."""
        self.host.user(owner_id, f"owner{owner_id}@example.com")
        self.host.dialog(dialog_id, owner_id, first_name=f"Visitor{dialog_id}", last_name=None)

    def say(self, dialog_id: int) -> int:
        """The visitor writes now. Not Host.message: its fixed timestamp would be hours old to the reconciler,
        which would then schedule the message at once and take the grace period out of every scenario."""
        mid = next(self._message_ids)
        with self.engine.begin() as conn:
            conn.execute(insert(host.dialog_messages).values(
                id=mid, dialog_id=dialog_id, sender="user", text=f"message for dialog {dialog_id}",
                timestamp=_utcnow(), message_kind="text"))
        return mid

    def write_and_schedule(self, dialog_id: int) -> float:
        """What the host API does after committing a visitor message; returns when it scheduled."""
        mid = self.say(dialog_id)
        at = time.time()
        assert client.schedule_fallback(dialog_id, mid), self.diag()
        return at

    # observation -----------------------------------------------------------------------------------
    def pending(self) -> set[int]:
        members: list[str] = self.r.zrange(PENDING, 0, -1)  # type: ignore[assignment]
        return {int(m) for m in members}

    def deliveries(self) -> list[Any]:
        d = models.deliveries
        with self.engine.connect() as conn:
            return list(conn.execute(select(d).order_by(d.c.id)))

    def mails(self) -> list[Received]:
        return list(self.smtp.messages)

    def wait_mails(self, count: int, timeout: float) -> list[Received]:
        def arrived() -> list[Received] | None:
            mails = self.mails()
            return mails if len(mails) >= count else None

        found = wait_until(arrived, timeout, f"{count} email(s)", self.diag)
        assert found is not None
        return found

    def expect_no_more(self, count: int, seconds: float = SETTLE, push: PushService | None = None,
                       pushes: int = 0) -> None:
        """Exactly `count` emails (and `pushes` pushes) now and for `seconds` more: no duplicate shows up."""
        deadline = time.monotonic() + seconds
        while True:
            n = len(self.smtp.messages)
            p = len(push.received) if push is not None else 0
            assert n <= count, f"{n} emails, expected exactly {count}\n{self.diag()}"
            assert p <= pushes, f"{p} pushes, expected exactly {pushes}\n{self.diag()}"
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        assert (n, p) == (count, pushes), f"{n} emails/{p} pushes, expected {count}/{pushes}\n{self.diag()}"

    def diag(self) -> str:
        try:
            rows = [(r.id, r.dialog_id, r.channel, r.status, r.attempts, r.last_error) for r in self.deliveries()]
        except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the real failure
            rows = [f"cannot read deliveries: {exc!r}"]  # type: ignore[list-item]
        parts = [
            f"smtp: {len(self.smtp.messages)} accepted, {self.smtp.refusals} refused, "
            f"{self.smtp.stalls_started} stalled; deliveries (id, dialog, channel, status, attempts, error): {rows}",
        ]
        parts += [w.describe(40) for w in self.workers]
        return "\n".join(parts)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def mail_dialog(mail: Received) -> int:
    """The dialog of an email, from its Message-ID, cross-checked against the message text it lists."""
    match = MESSAGE_ID.fullmatch(str(mail.message["Message-ID"]))
    assert match, mail.message["Message-ID"]
    dialog_id = int(match.group(2))
    assert [int(d) for d in TEXT_DIALOG.findall(mail.part("plain"))] == [dialog_id]
    assert f"Visitor{dialog_id}" in mail.part("plain")
    return dialog_id


@pytest.fixture
def scene(tmp_path: Path, db_url: str, engine: Engine) -> Iterator[Scene]:
    with ExitStack() as stack:
        yield Scene(tmp_path, db_url, engine, stack)
        # ExitStack unwinds in reverse: workers first, then SMTP and Redis, whatever the test's outcome.


def test_worker_killed_during_grace_the_next_worker_notifies_once(scene: Scene) -> None:
    """SIGKILL the worker while a check waits out its grace; a new worker sends it once, at most 60 s late."""
    scene.tenant(1, 100)
    first = scene.worker()
    scheduled_at = scene.write_and_schedule(100)
    assert scene.pending() == {100}, scene.diag()
    first.kill()
    assert time.time() < scheduled_at + GRACE, "the kill must land inside the grace period"
    assert not first.alive() and scene.mails() == []

    second = scene.worker()
    [mail] = scene.wait_mails(1, timeout=60)
    late = mail.at - (scheduled_at + GRACE)
    assert late <= 60, f"arrived {late:.1f}s after its deadline\n{scene.diag()}"
    assert mail_dialog(mail) == 100 and mail.rcpt_tos == ("owner1@example.com",)
    scene.expect_no_more(1)
    assert second.alive(), scene.diag()


@pytest.mark.parametrize("outage", ["restart", "flushall"])
def test_redis_outage_while_checks_are_pending(scene: Scene, outage: str) -> None:
    """restart: Redis (AOF on) stops and starts on its port with 5 checks pending; they survive in the AOF.
    flushall: the 5 pending checks are wiped; the reconciler finds the messages past their deadline.
    Either way each dialog is notified exactly once, and the worker lives on and handles a new message."""
    dialogs = list(range(101, 106))
    for i, dialog_id in enumerate(dialogs, start=1):
        scene.tenant(i, dialog_id)
    scene.tenant(9, 109)
    worker = scene.worker()
    scheduled_at = min(scene.write_and_schedule(d) for d in dialogs)
    assert scene.pending() == set(dialogs), scene.diag()
    if outage == "restart":
        scene.redis.stop()  # SIGTERM: Redis fsyncs its AOF on the way down
        time.sleep(0.5)  # the outage itself: the worker and its beat see connection errors
        scene.redis.start()
        assert time.time() < scheduled_at + GRACE, "restart took longer than the grace period"
        assert scene.pending() == set(dialogs), "pending checks did not survive the restart (AOF)"
    else:
        scene.r.flushall()
        assert scene.pending() == set()

    mails = scene.wait_mails(len(dialogs), timeout=60)
    assert sorted(mail_dialog(m) for m in mails) == dialogs, scene.diag()
    if outage == "flushall":
        log = worker.log_text()
        for dialog_id in dialogs:  # it was the reconciler's doing
            assert f"reconcile dialog={dialog_id} " in log, scene.diag()

    assert worker.alive(), scene.diag()
    again_at = scene.write_and_schedule(109)  # still processing after the outage
    mails = scene.wait_mails(len(dialogs) + 1, timeout=30)
    assert mail_dialog(mails[-1]) == 109
    assert mails[-1].at - (again_at + GRACE) < 5, scene.diag()
    scene.expect_no_more(len(dialogs) + 1)
    assert worker.alive(), scene.diag()


def test_smtp_refusing_delays_only_email_push_to_another_manager_is_on_time(scene: Scene) -> None:
    """421 for the first three tries: the email arrives once, after recovery. Meanwhile the push for another
    manager (another dialog, owner with a browser subscription) is not held up by the SMTP retries."""
    private_key, _public = generate_vapid_keys()
    scene.use(
        NOTIFIER_VAPID_PRIVATE_KEY=private_key,
        NOTIFIER_VAPID_SUBJECT="mailto:ops@replyx.test",
        NOTIFIER_PUSH_ALLOWED_HOSTS="127.0.0.1",
        NOTIFIER_EMAIL_AFTER_SECONDS="600",  # no escalation email for the push owner within this test
    )
    push = PushService().start()
    scene.stack.callback(push.stop)
    scene.tenant(1, 100)  # owner 1: email only
    scene.tenant(2, 200)  # owner 2: a browser subscription
    client.save_subscription(2, push.new_subscription("owner2-laptop"))
    scene.worker()
    scene.smtp.refuse_next(3)

    scheduled_at = min(scene.write_and_schedule(100), scene.write_and_schedule(200))
    push_at: float | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (push_at is None or not scene.smtp.messages):
        if push_at is None and push.received:
            push_at = time.time()
        time.sleep(0.02)
    assert push_at is not None, f"no push; rejections {push.rejections}\n{scene.diag()}"
    [mail] = scene.wait_mails(1, timeout=1)
    assert push_at - (scheduled_at + GRACE) < 3.0, f"push {push_at - scheduled_at:.1f}s after scheduling\n{scene.diag()}"
    assert push_at < mail.at, "the push waited for the SMTP retries"
    assert scene.smtp.refusals == 3 and mail.rcpt_tos == ("owner1@example.com",) and mail_dialog(mail) == 100
    [received] = push.received
    assert received.name == "owner2-laptop" and received.payload["dialog_id"] == 200
    scene.expect_no_more(1, push=push, pushes=1)
    assert push.rejections == []
    [email_row] = [r for r in scene.deliveries() if r.channel == "email"]
    assert (email_row.status, email_row.attempts) == ("sent", 4)


def test_two_workers_with_two_beats_on_200_dialogs_send_each_once(scene: Scene) -> None:
    """Two workers, each with its own embedded beat, race over 200 due checks: 200 emails, one per dialog."""
    n = 200
    dialogs = list(range(2001, 2001 + n))
    now = _utcnow()
    with scene.engine.begin() as conn:  # in bulk: Host writes a row per transaction
        conn.execute(insert(host.users), [
            {"id": d - 1000, "email": f"owner{d - 1000}@example.com", "first_name": "Ирина", "role": "user",
             "status": "active", "is_email_confirmed": True} for d in dialogs])
        conn.execute(insert(host.dialogs), [
            {"id": d, "user_id": d - 1000, "guest_id": f"g-{d}", "first_name": f"Visitor{d}", "started_at": now,
             "is_taken_over": 0, "handoff_status": "requested"} for d in dialogs])
    workers = [scene.worker(wait_ready=False) for _ in range(2)]
    for w in workers:
        w.wait_ready()
    for d in dialogs:
        scene.write_and_schedule(d)

    mails = scene.wait_mails(n, timeout=90)
    scene.expect_no_more(n)
    per_dialog = collections.Counter(mail_dialog(m) for m in mails)
    assert sorted(per_dialog) == dialogs and set(per_dialog.values()) == {1}, scene.diag()
    assert all(m.rcpt_tos == (f"owner{mail_dialog(m) - 1000}@example.com",) for m in mails)
    rows = scene.deliveries()
    assert len(rows) == n and {(r.status, r.attempts) for r in rows} == {("sent", 1)}, scene.diag()
    sent_by = [w.log_text().count("outcome=sent") for w in workers]
    assert sum(sent_by) == n and all(sent_by), f"sent per worker: {sent_by}\n{scene.diag()}"
    assert all(w.alive() and w.children() for w in workers), f"a worker or its beat died\n{scene.diag()}"


def test_one_hundred_concurrent_schedules_of_one_message_notify_once(scene: Scene) -> None:
    """100 threads call schedule_fallback for the same message at once: one pending check, one email."""
    scene.tenant(1, 100)
    scene.worker()
    mid = scene.say(100)
    before = dict(client.stats)
    barrier = threading.Barrier(100)
    results: list[bool | None] = [None] * 100

    def call(i: int) -> None:
        barrier.wait(timeout=10)
        results[i] = client.schedule_fallback(100, mid)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [True] * 100, scene.diag()
    counted = {k: client.stats[k] - before[k] for k in ("scheduled", "coalesced", "schedule_failures")}
    assert counted == {"scheduled": 1, "coalesced": 99, "schedule_failures": 0}  # one call opened the check
    assert scene.pending() == {100}, scene.diag()

    [mail] = scene.wait_mails(1, timeout=30)
    assert mail_dialog(mail) == 100
    scene.expect_no_more(1)
    assert len(scene.deliveries()) == 1, scene.diag()


def test_database_goes_away_during_a_check_and_comes_back(scene: Scene) -> None:
    """PostgreSQL: the worker reaches the database through a TCP proxy that the test cuts (open connections
    closed, new ones refused) just before the check is due, then restores a few seconds later.

    SQLite has no server to lose; its honest equivalent is a database the worker cannot write: another
    process holds the write lock (BEGIN IMMEDIATE) past the worker's 10 s busy timeout, so the check's first
    write fails with OperationalError "database is locked". Either way the worker log must show the check's
    `database_unavailable` retry, and the email must arrive once, after the database is back."""
    backend = make_url(scene.db_url).get_backend_name()
    scene.tenant(1, 100)
    worker_url = scene.db_url
    proxy: TcpProxy | None = None
    if backend == "postgresql":
        url = make_url(scene.db_url)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
        scene.stack.callback(proxy.stop)
        worker_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    worker = scene.worker(NOTIFIER_DATABASE_URL=worker_url)
    if proxy is not None:
        assert proxy.accepted > 0, "the worker does not go through the proxy"

    scheduled_at = scene.write_and_schedule(100)
    wait_until(lambda: time.time() >= scheduled_at + GRACE / 2, GRACE, "half the grace period")
    lock = SqliteWriteLock(str(make_url(scene.db_url).database)) if proxy is None else None
    cut_at = time.time()
    if proxy is not None:
        proxy.cut()
    else:
        assert lock is not None
        lock.acquire()
        scene.stack.callback(lock.release)
    try:
        assert scene.mails() == []
        wait_until(lambda: "check dialog=100 reason=database_unavailable" in worker.log_text(), 30,
                   "the check to fail on the database", scene.diag)
        failed_at = time.time()
        if proxy is not None:  # down for a few seconds: several retries fail
            wait_until(lambda: time.time() >= cut_at + 4, 5, "the outage to last 4 s")
    finally:
        restored_at = time.time()
        if proxy is not None:
            proxy.restore()
        elif lock is not None:
            lock.release()
    assert scene.mails() == []

    [mail] = scene.wait_mails(1, timeout=30)
    assert mail.at >= restored_at and mail_dialog(mail) == 100
    scene.expect_no_more(1)
    [row] = scene.deliveries()
    assert (row.status, row.attempts) == ("sent", 1)
    if lock is not None:  # the check waited out SQLite's busy timeout (10 s) before it failed
        assert failed_at - cut_at >= 9, f"failed after {failed_at - cut_at:.1f}s\n{scene.diag()}"
    assert worker.alive(), scene.diag()


def test_worker_killed_while_sending_the_next_one_sends_after_the_lease(scene: Scene) -> None:
    """The mail server hangs before accepting (RCPT stalls 10 s); the worker is killed with the delivery
    `sending`. A new worker takes it over once the send lease (4 s) expires: one email, attempts == 2."""
    scene.tenant(1, 100)
    scene.smtp.stall_next(1, 10.0)
    first = scene.worker()
    scene.write_and_schedule(100)
    wait_until(lambda: scene.smtp.stalls_started == 1, 30, "the worker to reach RCPT", scene.diag)
    [held] = wait_until(lambda: [r for r in scene.deliveries() if r.status == "sending"], 5,
                        "the delivery in status sending", scene.diag)
    assert held.attempts == 1
    first.kill()
    assert scene.mails() == []

    scene.worker()
    [mail] = scene.wait_mails(1, timeout=30)
    assert mail.at >= held.lease_until, "taken over before the send lease expired"
    assert mail_dialog(mail) == 100
    scene.expect_no_more(1)
    [row] = scene.deliveries()
    assert (row.id, row.status, row.attempts) == (held.id, "sent", 2), scene.diag()
