"""The host-facing API: one round trip, coalescing, forward-only read pointers, presence, outages."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys

import pytest
import redis
from freezegun import freeze_time
from sqlalchemy import select

from notifier import models
from notifier.config import load_settings, set_settings
from notifier.errors import InvalidInput
from notifier.redis_conn import reset_clients
from notifier.runtime import Runtime
from notifier.store import PENDING
from tests.support import RedisServer, free_port
from worker import client

pytestmark = pytest.mark.host  # runs in a host-only install too


@pytest.fixture
def rt(host_rt: Runtime) -> Runtime:
    """The host's runtime: these tests never need the worker's SMTP server."""
    return host_rt


def test_importing_the_client_loads_no_delivery_code() -> None:
    code = (
        "import sys, worker.client\n"
        "bad = [m for m in ('aiosmtplib', 'pywebpush', 'jinja2', 'worker.tasks', 'celery', 'notifier.render',"
        " 'notifier.channels') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_burst_coalesces_into_one_pending_check(rt: Runtime) -> None:
    r = rt.store.r
    with freeze_time("2026-11-26 12:00:00") as clock:
        t0 = clock().timestamp()
        assert client.schedule_fallback(100, 11)
        clock.tick(10)
        assert client.schedule_fallback(100, 13)
        assert client.schedule_fallback(100, 12)  # late, out of order: latest stays 13
        assert client.schedule_fallback(200, 21)
    assert client.stats["scheduled"] >= 2 and client.stats["coalesced"] >= 2
    assert r.zcard(PENDING) == 2
    assert float(r.zscore(PENDING, "100")) == t0 + 60  # due from the burst's first message
    assert rt.store.latest(100) == 13
    assert rt.store.seen_times(100) == {11: t0, 12: t0 + 10, 13: t0 + 10}


def test_async_twin_uses_the_same_state(rt: Runtime) -> None:
    async def burst() -> list[bool]:
        return [await client.aschedule_fallback(100, m) for m in (11, 12, 13)]

    assert asyncio.run(burst()) == [True, True, True]
    assert rt.store.r.zcard(PENDING) == 1 and rt.store.latest(100) == 13


def test_redis_outage_never_raises_into_the_host(caplog: pytest.LogCaptureFixture) -> None:
    set_settings(load_settings({"NOTIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    reset_clients()
    before = client.stats["schedule_failures"]
    with caplog.at_level(logging.WARNING, logger="worker.client"):
        assert client.schedule_fallback(100, 11) is False
        assert asyncio.run(client.aschedule_fallback(100, 12)) is False
        client.presence.touch(5, 100)  # also swallowed and counted
        assert client.presence.connection_stats() == {
            "connection_details": {"admin_connections": 0, "site_connections": 0}, "presence_available": False}
    assert client.stats["schedule_failures"] == before + 2
    assert "dialog=100 message=11 reason=redis_unavailable" in caplog.text


def test_redis_restart_is_survived(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path / "r").start()
    try:
        set_settings(load_settings({"NOTIFIER_REDIS_URL": server.url}))
        reset_clients()
        assert client.schedule_fallback(100, 11)
        server.stop(kill=True)
        assert client.schedule_fallback(100, 12) is False
        server.start()  # same port
        assert client.schedule_fallback(100, 13)  # reconnects by itself
        server.stop()
        server.start()  # restarted between two calls: the first call after it must not be lost
        assert client.schedule_fallback(100, 14)
    finally:
        server.stop()


@pytest.mark.parametrize("bad", [0, -1, "12", 1.5, True, None])
def test_bad_ids_are_refused_clearly(bad: object) -> None:
    with pytest.raises(InvalidInput, match="dialog_id must be a positive integer"):
        client.schedule_fallback(bad, 1)  # type: ignore[arg-type]


def test_read_pointers_only_move_forward(rt: Runtime) -> None:
    client.mark_read(100, 1, 50)
    client.mark_read(100, 1, 40)
    asyncio.run(client.amark_read(100, 1, 45))
    client.mark_read(100, 2, 10)
    rp = models.read_pointers
    with rt.engine.connect() as conn:
        rows = conn.execute(select(rp.c.manager_id, rp.c.message_id).order_by(rp.c.manager_id)).all()
    assert [tuple(r) for r in rows] == [(1, 50), (2, 10)]
    client.mark_read(100, 1, 51)
    with rt.engine.connect() as conn:
        assert conn.execute(select(rp.c.message_id).where(rp.c.manager_id == 1)).scalar_one() == 51


def test_connection_stats_count_every_process(rt: Runtime, redis_server: RedisServer) -> None:
    with freeze_time("2026-11-26 12:00:00") as clock:
        client.presence.touch(1, 100)
        client.presence.touch(2)
        client.presence.touch_site(100)
        # Another API process: its own Redis client, same keys.
        other = (
            "import time, sys\n"
            f"from notifier.config import load_settings, set_settings\n"
            f"set_settings(load_settings({{'NOTIFIER_REDIS_URL': '{redis_server.url}'}}))\n"
            "from notifier.redis_conn import client_for\nfrom notifier.store import Store\n"
            f"Store(client_for('{redis_server.url}')).touch_admin(3, 200, {clock().timestamp()}, 45)\n"
        )
        subprocess.run([sys.executable, "-c", other], check=True)
        stats = client.presence.connection_stats()
        assert stats == {"connection_details": {"admin_connections": 3, "site_connections": 1}, "presence_available": True}
        client.presence.leave(2)
        client.presence.leave_site(100)
        assert client.presence.connection_stats()["connection_details"] == {"admin_connections": 2, "site_connections": 0}
        clock.tick(44)
        assert client.presence.connection_stats()["connection_details"]["admin_connections"] == 2
        clock.tick(2)
        assert client.presence.connection_stats()["connection_details"]["admin_connections"] == 0


def test_schedule_is_one_round_trip(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    client.schedule_fallback(100, 1)  # the first call also loads the script (NOSCRIPT, SCRIPT LOAD)
    sent: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def spy(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))  # one call, one trip
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    assert client.schedule_fallback(100, 2) and client.schedule_fallback(200, 3)
    assert len(sent) == 2 and all(b"EVALSHA" in c[:40] for c in sent)


def test_a_redis_that_forgot_the_script_is_taught_again(rt: Runtime) -> None:
    assert client.schedule_fallback(100, 1)
    rt.store.r.script_flush()
    assert client.schedule_fallback(200, 2)  # NOSCRIPT, then EVAL on the same connection
    assert rt.store.r.zcard(PENDING) == 2


def test_a_hanging_redis_is_an_outage_not_a_hang_forever() -> None:
    # A server that accepts connections and never answers: the socket timeout ends the call.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        set_settings(load_settings({"NOTIFIER_REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}))
        reset_clients()
        assert client.schedule_fallback(100, 11) is False
    finally:
        silent.close()


SUB = {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": {"p256dh": "x", "auth": "y"}}


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: client.schedule_fallback(2**63, 1), "dialog_id"),
        (lambda: client.schedule_fallback(1, 2**63), "message_id"),
        (lambda: client.mark_read(1, 2, 2**63), "message_id"),
        (lambda: client.mark_read(1, "2", 3), "manager_id"),
        (lambda: asyncio.run(client.amark_read(0, 2, 3)), "dialog_id"),
        (lambda: client.add_team_member(1, -5), "user_id"),
        (lambda: client.remove_team_member("owner", 2), "owner_id"),
        (lambda: client.remove_team_member(1, None), "user_id"),
        (lambda: client.set_language(1, "de"), "language"),
        (lambda: client.set_language(True, "ru"), "manager_id"),
        (lambda: client.save_subscription(1, SUB, user_agent=5), "user_agent"),  # type: ignore[arg-type]
        (lambda: client.save_subscription(1, {**SUB, "endpoint": "https://[::1"}), "endpoint"),
        (lambda: client.save_subscription(1, {**SUB, "endpoint": "https://[::1]:99999/x"}), "endpoint"),
        (lambda: client.save_subscription(1, "not a dict"), "subscription"),  # type: ignore[arg-type]
        (lambda: client.save_subscription(2**64, SUB), "manager_id"),
        (lambda: client.delete_subscription(None), "endpoint"),  # type: ignore[arg-type]
        (lambda: client.delete_subscription("https://x", manager_id=0), "manager_id"),
        (lambda: client.presence.touch(1, dialog_id="7"), "dialog_id"),
        (lambda: client.presence.leave(1, dialog_id=2**63), "dialog_id"),
        (lambda: client.presence.touch_site(-1), "dialog_id"),
        (lambda: client.presence.leave_site(1.0), "dialog_id"),
    ],
)
def test_every_bad_input_is_invalid_input_naming_the_argument(rt: Runtime, call, argument: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as raised:
        call()
    assert argument in str(raised.value)
    assert not isinstance(raised.value, TypeError)


def test_the_largest_64_bit_id_is_accepted(rt: Runtime) -> None:
    biggest = 2**63 - 1
    assert client.schedule_fallback(biggest, biggest)
    client.mark_read(biggest, biggest, biggest)  # our columns are 64-bit: stored, not a database error
    with rt.engine.connect() as conn:
        assert conn.execute(select(models.read_pointers.c.message_id)).scalar_one() == biggest
