"""The client for asyncio hosts: presence on the event loop, `presence.connected(...)` around a stream
(heartbeats, leaving even when cancelled), `amark_read` off the loop on a bounded pool, `may_see_dialog`."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from sqlalchemy import Engine, select, text

from notifier import models
from notifier.config import load_settings, set_settings
from notifier.errors import InvalidInput, Unavailable
from notifier.offload import MAX_THREADS, run_blocking
from notifier.redis_conn import reset_clients
from notifier.runtime import Runtime
from notifier.store import PRESENCE_ADMIN, PRESENCE_SITE, admin_member
from tests.procs import SqliteWriteLock, wait_until
from tests.support import Host, free_port
from worker import client

pytestmark = pytest.mark.host


def run(coroutine_fn):  # type: ignore[no-untyped-def]
    """Run one scenario on a fresh event loop, closing that loop's Redis client afterwards."""

    async def main():  # type: ignore[no-untyped-def]
        try:
            return await coroutine_fn()
        finally:
            await client.aclose()

    return asyncio.run(main())


@pytest.fixture
def short_ttl(host_rt: Runtime) -> Iterator[Runtime]:
    """Presence expiring 0.6 s after the last heartbeat (heartbeats every 0.2 s)."""
    set_settings(dataclasses.replace(host_rt.settings, presence_ttl_seconds=0.6))
    yield host_rt


def present(rt: Runtime, manager_id: int, dialog_id: int | None) -> bool:
    score = rt.store.r.zscore(PRESENCE_ADMIN, admin_member(manager_id, dialog_id))
    return score is not None and float(score) > time.time()


def test_async_presence_shares_the_sync_keys(host_rt: Runtime) -> None:
    async def scenario() -> list[object]:
        p = client.presence
        await p.atouch(1, 100)
        await p.atouch(2)
        await p.atouch_site(100)
        seen = [await p.aconnection_stats()]
        await p.aleave(2)
        await p.aleave_site(100)
        seen.append(await p.aconnection_stats())
        return seen

    first, second = run(scenario)
    assert first == {"connection_details": {"admin_connections": 2, "site_connections": 1}, "presence_available": True}
    assert second["connection_details"] == {"admin_connections": 1, "site_connections": 0}  # type: ignore[index]
    assert client.presence.connection_stats() == second  # the sync client reads the same keys
    assert host_rt.store.online_on_dialog([1, 2], 100, time.time()) == {1}
    assert host_rt.store.r.zcard(PRESENCE_SITE) == 0


def test_connected_touches_heartbeats_and_leaves(short_ttl: Runtime) -> None:
    rt = short_ttl

    async def scenario() -> None:
        async with client.presence.connected(7, 100):
            assert present(rt, 7, 100)
            first = float(rt.store.r.zscore(PRESENCE_ADMIN, admin_member(7, 100)))
            await asyncio.sleep(1.5)  # 2.5 TTLs: only heartbeats keep it alive
            assert present(rt, 7, 100), "the heartbeat did not keep the presence alive"
            assert float(rt.store.r.zscore(PRESENCE_ADMIN, admin_member(7, 100))) > first + 1.0
        assert rt.store.r.zscore(PRESENCE_ADMIN, admin_member(7, 100)) is None  # left at once, not expired

    run(scenario)


def test_a_cancelled_stream_still_leaves(host_rt: Runtime) -> None:
    """asyncio cancellation, anyio's level-triggered cancel scope (what Starlette uses when the browser goes
    away) and an async generator closed half-way: each leaves."""
    rt = host_rt

    async def stream(ready: asyncio.Event, dialog_id: int) -> None:
        async with client.presence.connected(7, dialog_id):
            ready.set()
            await asyncio.sleep(3600)

    async def scenario() -> None:
        ready = asyncio.Event()
        task = asyncio.get_running_loop().create_task(stream(ready, 100))
        await ready.wait()
        assert present(rt, 7, 100)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not present(rt, 7, 100)

        async with anyio.create_task_group() as group:
            ready = asyncio.Event()
            group.start_soon(stream, ready, 200)
            await ready.wait()
            assert present(rt, 7, 200)
            group.cancel_scope.cancel()
        await asyncio.sleep(0.2)  # the leave runs in its own task, shielded from the scope
        assert not present(rt, 7, 200)

        async def events() -> AsyncIterator[str]:
            async with client.presence.connected(7, 300):
                while True:
                    yield "data: ping\n\n"

        agen = events()
        assert await agen.__anext__() == "data: ping\n\n"
        assert present(rt, 7, 300)
        await agen.aclose()  # what a server does with a response body it stops sending
        assert not present(rt, 7, 300)

    run(scenario)


def test_presence_without_redis_lets_the_stream_go_on() -> None:
    set_settings(load_settings({"NOTIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    reset_clients()
    before = client.stats["presence_failures"]

    async def scenario() -> dict[str, object]:
        async with client.presence.connected(7, 100):
            await client.presence.atouch_site(100)
        return await client.presence.aconnection_stats()

    assert run(scenario) == {"connection_details": {"admin_connections": 0, "site_connections": 0}, "presence_available": False}
    assert client.stats["presence_failures"] >= before + 4  # touch, site touch, leave, stats


@pytest.mark.parametrize(
    ("manager_id", "dialog_id", "name"), [(0, 1, "manager_id"), (1, "2", "dialog_id"), (True, None, "manager_id")]
)
def test_connected_refuses_bad_ids_at_once(manager_id: object, dialog_id: object, name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        client.presence.connected(manager_id, dialog_id)  # type: ignore[arg-type]


def test_amark_read_waits_off_the_event_loop(host_rt: Runtime, db_url: str) -> None:
    """While another transaction holds the write the pointer needs, amark_read waits in our pool and the
    loop keeps ticking. The caller then gives up (the browser went away): the write already running in
    its thread still lands once the lock is released."""
    engine = host_rt.engine
    client.mark_read(100, 1, 5)
    lock = _hold_pointer_row(engine, db_url)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    async def scenario() -> None:
        beat = asyncio.get_running_loop().create_task(ticker())
        reading = asyncio.get_running_loop().create_task(client.amark_read(100, 1, 9))
        await asyncio.sleep(0.6)
        assert not reading.done() and ticks >= 10, f"loop blocked: {ticks} ticks"
        reading.cancel()
        beat.cancel()

    try:
        run(scenario)
    finally:
        lock()
    rp = models.read_pointers

    def landed() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(rp.c.message_id).where(rp.c.dialog_id == 100)).scalar_one() == 9

    wait_until(landed, 15, "the pointer written by the abandoned amark_read")


def _hold_pointer_row(engine: Engine, db_url: str):  # type: ignore[no-untyped-def]
    """Hold what an upsert of pointer (100, 1) must wait for; returns the release function."""
    if db_url.startswith("sqlite"):
        lock = SqliteWriteLock(engine.url.database or "").acquire()
        return lock.release
    conn = engine.connect()
    trans = conn.begin()
    conn.execute(text("SELECT 1 FROM notifier_read_pointers WHERE dialog_id = 100 AND manager_id = 1 FOR UPDATE"))

    def release() -> None:
        trans.rollback()
        conn.close()

    return release


def test_the_pool_is_bounded() -> None:
    active, peak, lock = 0, 0, threading.Lock()

    def work() -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return threading.current_thread().name

    async def scenario() -> list[str]:
        return await asyncio.gather(*(run_blocking(work) for _ in range(3 * MAX_THREADS)))

    names = asyncio.run(scenario())
    assert peak <= MAX_THREADS and all(n.startswith("notifier-db") for n in names)


def test_may_see_dialog(host_rt: Runtime, hostdb: Host) -> None:
    hostdb.user(1)
    hostdb.user(2)
    hostdb.user(3, role="admin")
    hostdb.user(4)
    hostdb.dialog(100, 1, handoff_status="active", assigned_manager_id=4)  # 4: another tenant's, by a host bug
    client.add_team_member(1, 2)
    assert [client.may_see_dialog(m, 100) for m in (1, 2, 3, 4)] == [True, True, True, False]
    assert client.may_see_dialog(1, 999) is False  # no such dialog: the same answer
    assert run(lambda: client.amay_see_dialog(2, 100)) is True
    client.remove_team_member(1, 2)
    assert client.may_see_dialog(2, 100) is False


def test_database_outage_is_unavailable(host_rt: Runtime) -> None:
    set_settings(dataclasses.replace(host_rt.settings, database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none"))
    with pytest.raises(Unavailable, match="database"):
        client.may_see_dialog(1, 100)
    with pytest.raises(Unavailable, match="database"):
        run(lambda: client.amissed(1))
