"""Concurrent sending (notifier.sending): many deliveries in flight per process, bounded per remote server,
a stalled server holding up only its own deliveries, and control work on its own queue.

In-process tests drive the pipeline at an explicit `now` (the lanes are real threads, so the clock is passed,
not frozen); a real SMTP server, the loopback push service, Redis and the suite's database take part.
The worker tests run real `celery worker` processes, one per queue, as `notifier worker` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from notifier import host, ledger, models
from notifier.channels.base import EmailTarget
from notifier.channels.email import SmtpPool
from notifier.check import dispatch, run_checks
from notifier.config import load_settings
from notifier.deliver import DeliveryOutcome
from notifier.enums import Channel, DeliveryStatus, Reason
from notifier.errors import ConfigError, Unavailable
from notifier.ledger.deliveries import ENQUEUE_LEASE
from notifier.pushkeys import generate_vapid_keys
from notifier.render import MessageView, RenderContext, Renderer
from notifier.runtime import Runtime
from notifier.sending import lane_for, run_batch
from notifier.snapshot import Route
from tests.conftest import runtime_for
from tests.procs import REPO, WorkerProc, child_env, wait_until, worker_env
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer
from tests.support import Host
from worker import client
from worker.celery_app import CONTROL_QUEUE, SEND_QUEUE, app

PER_HOST = 3


def due_deliveries(rt: Runtime, now: float) -> list[int]:
    """Dispatch and run the due checks at `now`, as the control worker does; the deliveries they create."""
    checks: list[int] = []
    created: list[int] = []
    dispatch(rt, checks.extend, created.append, now)
    for _ in run_checks(rt, checks, created.append, now):
        pass
    return created


def statuses(rt: Runtime) -> dict[int, str]:
    with rt.engine.connect() as conn:
        rows = conn.execute(select(models.deliveries.c.id, models.deliveries.c.status)).all()
    return {int(i): str(s) for i, s in rows}


@pytest.fixture
def crt(base_env: dict[str, str], engine: object, redis_server: object) -> Iterator[Runtime]:
    """A worker's runtime with Web Push on and PER_HOST deliveries in flight per remote server."""
    private, _public = generate_vapid_keys()
    settings = load_settings({
        **base_env,
        "NOTIFIER_VAPID_PRIVATE_KEY": private,
        "NOTIFIER_VAPID_SUBJECT": "mailto:ops@replyx.test",
        "NOTIFIER_PUSH_ALLOWED_HOSTS": "127.0.0.1",
        "NOTIFIER_MAX_IN_FLIGHT_PER_HOST": str(PER_HOST),
    })
    with runtime_for(settings) as runtime:
        yield runtime


def dialogs_due(host: Host, owners: range) -> float:
    """One dialog per owner, one visitor message each, scheduled now; returns a moment past their grace."""
    for owner in owners:
        host.user(owner, f"owner{owner}@example.com", f"Менеджер {owner}")
        host.dialog(1000 + owner, owner)
        assert client.schedule_fallback(1000 + owner, host.message(1000 + owner, f"вопрос {owner}"))
    return time.time() + 61  # grace (60 s) + 1 s


def test_a_batch_runs_deliveries_at_once_bounded_per_mail_server(crt: Runtime, hostdb: Host,
                                                                 smtp_server: SmtpServer) -> None:
    now = dialogs_due(hostdb, range(1, 10))
    ids = due_deliveries(crt, now)
    assert len(ids) == 9
    smtp_server.stall_next(9, 0.3)  # every mail waits at RCPT, as behind a slow link
    finished: dict[int, DeliveryOutcome | Unavailable] = {}
    result = run_batch(crt, ids, lambda d, o: finished.__setitem__(d, o), wait_seconds=30, now=now)
    assert result.still_running == [] and result.count("sent") == 9 and set(finished) == set(ids)
    mails = smtp_server.wait_for(9)
    assert sorted(m.rcpt_tos for m in mails) == sorted((f"owner{o}@example.com",) for o in range(1, 10))
    lane = lane_for(Route(Channel.EMAIL, None), crt.settings)
    # Several mails were in flight at once, never more than the bound; each thread kept one connection.
    assert crt.lanes().peak[lane] == PER_HOST
    assert crt.email_sender().connections_opened == PER_HOST
    assert set(statuses(crt).values()) == {DeliveryStatus.SENT.value}


def test_a_group_decides_each_delivery_again_as_if_alone(base_env: dict[str, str], engine: object,
                                                         redis_server: object, hostdb: Host,
                                                         smtp_server: SmtpServer) -> None:
    """Eight in flight per server: groups of four, read and decided together. What changed for one recipient
    between the check and the send stops that one only."""
    with runtime_for(load_settings({**base_env, "NOTIFIER_MAX_IN_FLIGHT_PER_HOST": "8"})) as rt:
        now = dialogs_due(hostdb, range(1, 5))
        ids = due_deliveries(rt, now)
        assert len(ids) == 4
        with rt.engine.connect() as conn:
            newest = conn.execute(select(func.max(host.dialog_messages.c.id)).where(
                host.dialog_messages.c.dialog_id == 1002)).scalar_one()
        client.mark_read(1002, 2, newest)  # owner 2 read the dialog meanwhile
        client.set_preferences(3, email=False)  # owner 3 turned email off meanwhile
        smtp_server.stall_next(4, 0.3)
        result = run_batch(rt, ids, lambda d, o: None, wait_seconds=30, now=now)
        assert rt.lanes().lane(lane_for(Route(Channel.EMAIL, None), rt.settings)).group_size == 4
        assert result.count("sent") == 2 and result.count("skipped") == 2
        assert sorted(m.rcpt_tos for m in smtp_server.wait_for(2)) == [("owner1@example.com",), ("owner4@example.com",)]
        with rt.engine.connect() as conn:
            reasons = dict(conn.execute(select(models.deliveries.c.manager_id, models.deliveries.c.reason)).all())
        assert (reasons[2], reasons[3]) == (Reason.READ.value, Reason.CHANNEL_OFF.value)
        assert rt.lanes().peak[lane_for(Route(Channel.EMAIL, None), rt.settings)] == 2  # both sends at once


def test_a_stalled_mail_server_holds_up_only_its_own_deliveries(crt: Runtime, hostdb: Host,
                                                                smtp_server: SmtpServer,
                                                                push_service: PushService) -> None:
    now = dialogs_due(hostdb, range(1, 3))
    client.save_subscription(2, push_service.new_subscription("phone-2"))  # owner 2: push at grace
    ids = due_deliveries(crt, now)
    with crt.engine.connect() as conn:
        channel_of = {int(i): str(c) for i, c in conn.execute(select(models.deliveries.c.id, models.deliveries.c.channel))}
    [mail_id] = [i for i in ids if channel_of[i] == Channel.EMAIL.value]  # owner 1 has no browser: email at grace
    [push_id] = [i for i in ids if channel_of[i] == Channel.WEBPUSH.value]
    smtp_server.stall_next(1, 4.0)  # under NOTIFIER_SMTP_TIMEOUT_SECONDS (5)
    result = run_batch(crt, ids, lambda d, o: None, wait_seconds=2.0, now=now)
    # The push went while the mail server still held the mail: the batch did not wait for it either.
    assert result.still_running == [mail_id]
    assert result.outcomes[push_id] == DeliveryOutcome(DeliveryStatus.SENT)
    assert [p.name for p in push_service.received] == ["phone-2"] and smtp_server.messages == []
    [mail] = smtp_server.wait_for(1, timeout=10)  # it finishes in the background, once
    assert mail.rcpt_tos == ("owner1@example.com",)
    wait_until(lambda: statuses(crt)[mail_id] == DeliveryStatus.SENT.value, 10, "the mail recorded as sent")
    assert len(push_service.received) == 1


def test_a_slow_mail_server_does_not_slow_the_pushes_queued_behind_its_mails(crt: Runtime, hostdb: Host,
                                                                            smtp_server: SmtpServer,
                                                                            push_service: PushService) -> None:
    """Batch after batch, as the sending worker takes them, mails first: they wait in their own lane (three
    in flight, each held two seconds) while the pushes of the later batches go at once."""
    now = dialogs_due(hostdb, range(1, 13))
    for owner in range(7, 13):  # owners 7-12: push at grace; owners 1-6 have no browser: email at grace
        client.save_subscription(owner, push_service.new_subscription(f"phone-{owner}"))
    ids = due_deliveries(crt, now)
    with crt.engine.connect() as conn:
        channel_of = {int(i): str(c) for i, c in conn.execute(select(models.deliveries.c.id, models.deliveries.c.channel))}
    ids.sort(key=lambda i: channel_of[i] != Channel.EMAIL.value)
    assert [channel_of[i] for i in ids] == [Channel.EMAIL.value] * 6 + [Channel.WEBPUSH.value] * 6
    smtp_server.stall_next(6, 2.0)
    for i in range(0, 12, 4):  # mails 1-4; mails 5-6 and pushes 1-2; pushes 3-6
        run_batch(crt, ids[i : i + 4], lambda d, o: None, wait_seconds=30, now=now, until_queued=True)
    wait_until(lambda: len(push_service.received) == 6, 10, "every push sent")
    assert smtp_server.messages == []  # the first mails are still held by the server
    assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(6, timeout=15)) == [f"owner{o}@example.com" for o in range(1, 7)]
    wait_until(lambda: set(statuses(crt).values()) == {DeliveryStatus.SENT.value}, 10, "every delivery recorded")
    assert len(push_service.received) == 6 and len(smtp_server.messages) == 6


def test_the_smtp_pool_shares_its_connections_between_threads(base_env: dict[str, str], smtp_server: SmtpServer) -> None:
    """At most one connection per send in flight, whichever thread sends: three overlapping sends open three;
    nine more, each from a thread of its own, reuse them. Closed, the pool sends again on a new one."""
    pool = SmtpPool(load_settings(base_env))
    rendered = Renderer().email(RenderContext(dialog_id=1, language="ru", recipient_name="Анна", visitor_name=None,
                                              site_name=None, messages=(MessageView(1, "Здравствуйте"),),
                                              dialog_url="https://example.com/dialogs/1"))

    def send(i: int) -> None:
        pool.send(EmailTarget(f"m{i}@example.com", "Анна", f"<pool.{i}@example.com>", None), rendered)

    sessions = smtp_server.sessions  # aiosmtpd's controller connects once itself when it starts
    try:
        smtp_server.stall_next(3, 0.5)  # the first three held by the server: their sends overlap
        with ThreadPoolExecutor(3) as threads:
            list(threads.map(send, range(3)))
        assert pool.connections_opened == 3
        for i in range(3, 12):
            with ThreadPoolExecutor(1) as thread:  # a new thread each time
                thread.submit(send, i).result()
        assert pool.connections_opened == 3 and smtp_server.sessions - sessions == 3
        assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(12)) == sorted(f"m{i}@example.com" for i in range(12))
        pool.close()
        send(12)
        assert pool.connections_opened == 4 and len(smtp_server.wait_for(13)) == 13
    finally:
        pool.close()


def test_a_stuck_lane_holding_its_backlog_is_given_nothing_more(crt: Runtime, hostdb: Host, smtp_server: SmtpServer,
                                                               push_service: PushService) -> None:
    """A mail server that stalls, so that the mail lane holds all it may (its backlog lowered to PER_HOST)
    and sends nothing: the next batch leaves its mails in the ledger for the sweeper, sends its push, and
    does not wait for the mail lane to drain."""
    now = dialogs_due(hostdb, range(1, 11))
    client.save_subscription(10, push_service.new_subscription("phone-10"))  # owners 1-9: email at grace
    ids = due_deliveries(crt, now)
    with crt.engine.connect() as conn:
        rows = conn.execute(select(models.deliveries.c.id, models.deliveries.c.channel, models.deliveries.c.lease_until)).all()
    channel_of = {int(i): str(c) for i, c, _lease in rows}
    enqueue_lease = {int(i): float(lease) for i, _c, lease in rows}
    mails = [i for i in ids if channel_of[i] == Channel.EMAIL.value]
    [push_id] = [i for i in ids if channel_of[i] == Channel.WEBPUSH.value]
    assert len(mails) == 3 * PER_HOST
    lane = crt.lanes().lane(lane_for(Route(Channel.EMAIL, None), crt.settings))
    lane.backlog = PER_HOST
    smtp_server.stall_next(2 * PER_HOST, 3.0)
    first, later = mails[: 2 * PER_HOST], mails[2 * PER_HOST :]
    run_batch(crt, first, lambda d, o: None, wait_seconds=0.1, now=now, until_queued=True)
    # PER_HOST in flight, held by the server, and PER_HOST waiting: full, and after a second without a send
    # ending, not keeping up.
    wait_until(lambda: lane.state().stuck, 5, "the mail lane full and not keeping up")
    result = run_batch(crt, [*later, push_id], lambda d, o: None, wait_seconds=30, now=now, until_queued=True)
    assert result.left == later
    assert smtp_server.messages == []  # the batch returned while the server still held every mail
    wait_until(lambda: len(push_service.received) == 1, 10, "the push sent")
    with crt.engine.connect() as conn:
        left_rows = conn.execute(select(models.deliveries.c.id, models.deliveries.c.status, models.deliveries.c.attempts,
                                        models.deliveries.c.lease_until).where(models.deliveries.c.id.in_(later))).all()
    # Untouched: pending, no attempt, the enqueue lease they came with.
    assert sorted((int(i), str(st), int(a), float(u)) for i, st, a, u in left_rows) == [
        (i, DeliveryStatus.PENDING.value, 0, enqueue_lease[i]) for i in sorted(later)]
    assert set(later) <= set(ledger.sweep(crt.engine, max(enqueue_lease.values()) + 1, crt.settings.max_attempts))
    assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(2 * PER_HOST, timeout=15)) == sorted(
        f"owner{o}@example.com" for o in range(1, 7))  # the first batch's mails, once each
    wait_until(lambda: all(statuses(crt)[i] == DeliveryStatus.SENT.value for i in first), 10, "the first mails recorded")


def test_deliveries_waiting_in_a_lane_keep_their_enqueue_lease_until_the_worker_stops(crt: Runtime, hostdb: Host,
                                                                                      smtp_server: SmtpServer) -> None:
    now = dialogs_due(hostdb, range(1, 7))
    ids = due_deliveries(crt, now)  # six mails, queued until now + ENQUEUE_LEASE
    later = now + ENQUEUE_LEASE / 2  # the batch runs half a lease later: the sweeper would take them soon
    lane = crt.lanes().lane(lane_for(Route(Channel.EMAIL, None), crt.settings))
    lane.renew_every = 0.2
    smtp_server.stall_next(6, 2.0)
    run_batch(crt, ids, lambda d, o: None, wait_seconds=0.1, now=later, until_queued=True)

    def leases() -> dict[int, tuple[str, float | None]]:
        with crt.engine.connect() as conn:
            rows = conn.execute(select(models.deliveries.c.id, models.deliveries.c.status, models.deliveries.c.lease_until))
            return {int(i): (str(s), None if u is None else float(u)) for i, s, u in rows}

    waiting = (DeliveryStatus.PENDING.value, later + ENQUEUE_LEASE)
    wait_until(lambda: list(leases().values()).count(waiting) == PER_HOST, 5, "the waiting ones' leases renewed")
    assert list(leases().values()).count((DeliveryStatus.SENDING.value, later + crt.settings.send_lease_seconds)) == PER_HOST
    assert ledger.sweep(crt.engine, later + 1, crt.settings.max_attempts) == []  # nothing stale: all held by this worker
    crt.lanes().close()  # the three in flight finish; the three waiting are handed back
    dropped = [i for i, (status, _lease) in leases().items() if status == DeliveryStatus.PENDING.value]
    assert len(dropped) == PER_HOST and {leases()[i][1] for i in dropped} == {later}
    assert sorted(ledger.sweep(crt.engine, later + 1, crt.settings.max_attempts)) == sorted(dropped)
    assert len(smtp_server.messages) == PER_HOST


def test_a_transient_refusal_in_a_batch_hands_the_retry_to_the_caller(crt: Runtime, hostdb: Host,
                                                                      smtp_server: SmtpServer) -> None:
    now = dialogs_due(hostdb, range(1, 4))
    ids = due_deliveries(crt, now)
    smtp_server.refuse_next(1)
    finished: dict[int, DeliveryOutcome | Unavailable] = {}
    result = run_batch(crt, ids, lambda d, o: finished.__setitem__(d, o), wait_seconds=30, now=now)
    assert result.count("sent") == 2 and result.count("pending") == 1
    [retry] = [o for o in finished.values() if isinstance(o, DeliveryOutcome) and o.status is DeliveryStatus.PENDING]
    assert retry.retry_in is not None and retry.retry_in > 0
    assert len(smtp_server.messages) == 2


def test_bad_concurrency_settings_are_refused(base_env: dict[str, str]) -> None:
    for name, value in (("NOTIFIER_MAX_IN_FLIGHT_PER_HOST", "0"), ("NOTIFIER_MAX_IN_FLIGHT_PER_HOST", "lots"),
                        ("NOTIFIER_SEND_BATCH_SIZE", "100000")):
        with pytest.raises(ConfigError, match=name):
            load_settings({**base_env, name: value})


def test_sending_tasks_have_their_own_queue() -> None:
    router = app.amqp.router
    for name in ("notifier.deliver", "notifier.deliver_batch", "notifier.clear_dialogs"):
        assert router.route({}, name)["queue"].name == SEND_QUEUE, name
    for name in ("notifier.dispatch_due", "notifier.check_dialogs", "notifier.reconcile", "notifier.retention"):
        assert router.route({}, name)["queue"].name == CONTROL_QUEUE, name


def test_the_worker_loads_its_channels_before_the_pool_forks() -> None:
    # Imported by worker.tasks in the main process, so a pool process's first delivery does not import them.
    code = "import sys, worker.tasks\nprint(sorted(m for m in ('pywebpush', 'aiosmtplib', 'http_ece') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "['aiosmtplib', 'http_ece', 'pywebpush']"


@pytest.mark.slow
def test_checks_stay_on_time_behind_a_backlog_of_sends(tmp_path: Path, db_url: str, engine: object,
                                                       hostdb: Host, redis_server: object,
                                                       smtp_server: SmtpServer) -> None:
    """A mail server so slow that sending falls far behind: a new dialog's check still runs at its deadline,
    while deliveries decided before it are still waiting to be sent."""
    env = worker_env(db_url, redis_server.url, smtp_server.port, tmp_path,  # type: ignore[attr-defined]
                     NOTIFIER_MAX_IN_FLIGHT_PER_HOST="1", NOTIFIER_SEND_BATCH_SIZE="5")
    control = WorkerProc(tmp_path, env, beat=True, name="control", queues=CONTROL_QUEUE)
    sender = WorkerProc(tmp_path, env, name="send", queues=SEND_QUEUE)
    try:
        control.start()
        sender.start()
        with runtime_for(load_settings(env)) as rt:
            smtp_server.stall_next(40, 0.5)  # 40 mails, one at a time, half a second each: 20 s of sending
            for owner in range(1, 41):
                hostdb.user(owner, f"owner{owner}@example.com")
                hostdb.dialog(1000 + owner, owner)
                assert client.schedule_fallback(1000 + owner, hostdb.message(1000 + owner, "вопрос"))
            wait_until(lambda: len(statuses(rt)) == 40, 20, "40 deliveries decided", control.tail)
            hostdb.user(99, "late@example.com")
            hostdb.dialog(1099, 99)
            assert client.schedule_fallback(1099, hostdb.message(1099, "ещё вопрос"))
            wait_until(lambda: len(statuses(rt)) == 41, 20, "the late dialog decided", control.tail)
            waiting = [s for s in statuses(rt).values() if s != DeliveryStatus.SENT.value]
            assert len(waiting) >= 10, f"the backlog was gone before the late check ran: {waiting}"
            wait_until(lambda: len(smtp_server.messages) == 41, 60, "every mail sent", sender.tail)
            assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
                [f"owner{o}@example.com" for o in range(1, 41)] + ["late@example.com"])
    finally:
        control.stop()
        sender.stop()


@pytest.mark.slow
def test_the_sending_processes_share_a_burst(tmp_path: Path, db_url: str, engine: object, hostdb: Host,
                                             redis_server: object, smtp_server: SmtpServer) -> None:
    """A sending worker with two processes and a burst of 150 mails, four in flight per process, each held
    50 ms by the server: a process whose lane is busy leaves the next batches to its sibling. (When a
    process took batches as long as its lane had room for 1,500, Celery handed nearly all of them to
    the first process, which sent them alone.)"""
    env = worker_env(db_url, redis_server.url, smtp_server.port, tmp_path,  # type: ignore[attr-defined]
                     NOTIFIER_MAX_IN_FLIGHT_PER_HOST="4", NOTIFIER_SEND_BATCH_SIZE="50")
    control = WorkerProc(tmp_path, env, beat=True, name="control", queues=CONTROL_QUEUE)
    sender = WorkerProc(tmp_path, env, name="send", queues=SEND_QUEUE, pool="prefork", concurrency=2)
    try:
        control.start()
        sender.start()
        smtp_server.stall_next(150, 0.05)
        with runtime_for(load_settings(env)):  # the host's side schedules into the workers' Redis
            for owner in range(1, 151):
                hostdb.user(owner, f"owner{owner}@example.com")
                hostdb.dialog(1000 + owner, owner)
                assert client.schedule_fallback(1000 + owner, hostdb.message(1000 + owner, "вопрос"))
        wait_until(lambda: len(smtp_server.messages) == 150, 60, "every mail sent", sender.tail)
        wait_until(lambda: sender.log_text().count("outcome=sent") == 150, 10, "every send logged", sender.tail)
        per_process = Counter(re.findall(r"/(ForkPoolWorker-\d+)\][^\n]*outcome=sent", sender.log_text()))
        assert len(per_process) == 2 and min(per_process.values()) >= 30, per_process
    finally:
        control.stop()
        sender.stop()


@pytest.mark.slow
def test_notifier_worker_runs_a_control_and_a_sending_worker(tmp_path: Path, db_url: str, engine: object,
                                                            redis_server: object, smtp_server: SmtpServer) -> None:
    env = child_env(worker_env(db_url, redis_server.url, smtp_server.port, tmp_path))  # type: ignore[attr-defined]
    log = tmp_path / "notifier-worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "notifier.cli", "worker", "--concurrency", "1"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "control@" in log.read_text() and "send@" in log.read_text()
                   and log.read_text().count(" ready.") == 2, 60, "both workers ready", log.read_text)
        text = log.read_text()
        assert f".> {CONTROL_QUEUE} " in text and f".> {SEND_QUEUE} " in text
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("notifier worker did not stop within 30 s of SIGTERM; its log:\n" + log.read_text()[-6000:])
        assert code == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
