"""Who is connected, shared by every API process through Redis; entries expire without heartbeats.

Both faces of one thing: `touch`/`leave`/... for threaded hosts, `atouch`/`aleave`/... on the event loop
for asyncio hosts, and `connected(...)`, the async context manager an admin stream lives in. None of
them raises for a Redis outage: it is logged and counted in `worker.client.stats`, and the stream or page
goes on (the worker then simply does not know the manager is online, and may notify).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import redis

from notifier.config import get_settings
from notifier.validate import check_id, check_optional_id
from worker._conn import async_store, stats, store

log = logging.getLogger(__name__)

# Leaves running after their stream was cancelled: referenced until done, so they are not collected.
_leaving: set[asyncio.Task[None]] = set()


def _failed(what: str, exc: BaseException) -> None:
    stats["presence_failures"] += 1
    log.warning("presence %s failed error=%s", what, type(exc).__name__)


async def _guarded(what: str, call: Callable[[], Awaitable[None]]) -> None:
    try:
        await call()
    except (redis.RedisError, OSError) as exc:
        _failed(what, exc)


def _offline() -> dict[str, Any]:
    return {"connection_details": {"admin_connections": 0, "site_connections": 0}, "presence_available": False}


def _online(admin: int, site: int) -> dict[str, Any]:
    return {"connection_details": {"admin_connections": admin, "site_connections": site}, "presence_available": True}


class Presence:
    """Presence of managers (per dialog, or `dialog_id=None`: the panel is open) and of widget visitors."""

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (redis.RedisError, OSError) as exc:
            _failed(what, exc)

    # Threaded hosts -------------------------------------------------------------------------------
    def touch(self, manager_id: int, dialog_id: int | None = None) -> None:
        check_id("manager_id", manager_id)
        check_optional_id("dialog_id", dialog_id)
        ttl = get_settings().presence_ttl_seconds
        self._guard("touch", store().touch_admin, manager_id, dialog_id, time.time(), ttl)

    def leave(self, manager_id: int, dialog_id: int | None = None) -> None:
        check_id("manager_id", manager_id)
        check_optional_id("dialog_id", dialog_id)
        self._guard("leave", store().leave_admin, manager_id, dialog_id)

    def touch_site(self, dialog_id: int) -> None:
        check_id("dialog_id", dialog_id)
        self._guard("touch_site", store().touch_site, dialog_id, time.time(), get_settings().presence_ttl_seconds)

    def leave_site(self, dialog_id: int) -> None:
        check_id("dialog_id", dialog_id)
        self._guard("leave_site", store().leave_site, dialog_id)

    def connection_stats(self) -> dict[str, Any]:
        """Like the host's stats endpoint, but counted across every process.

        With Redis unreachable the counts are 0 and `presence_available` is False: a stats page never fails.
        """
        try:
            return _online(*store().connection_counts(time.time()))
        except (redis.RedisError, OSError) as exc:
            _failed("connection_stats", exc)
            return _offline()

    # Asyncio hosts: the same keys, on this event loop's client ---------------------------------------
    async def atouch(self, manager_id: int, dialog_id: int | None = None) -> None:
        check_id("manager_id", manager_id)
        check_optional_id("dialog_id", dialog_id)
        ttl = get_settings().presence_ttl_seconds
        await _guarded("touch", lambda: async_store().touch_admin(manager_id, dialog_id, time.time(), ttl))

    async def aleave(self, manager_id: int, dialog_id: int | None = None) -> None:
        check_id("manager_id", manager_id)
        check_optional_id("dialog_id", dialog_id)
        await _guarded("leave", lambda: async_store().leave_admin(manager_id, dialog_id))

    async def atouch_site(self, dialog_id: int) -> None:
        check_id("dialog_id", dialog_id)
        ttl = get_settings().presence_ttl_seconds
        await _guarded("touch_site", lambda: async_store().touch_site(dialog_id, time.time(), ttl))

    async def aleave_site(self, dialog_id: int) -> None:
        check_id("dialog_id", dialog_id)
        await _guarded("leave_site", lambda: async_store().leave_site(dialog_id))

    async def aconnection_stats(self) -> dict[str, Any]:
        try:
            return _online(*await async_store().connection_counts(time.time()))
        except (redis.RedisError, OSError) as exc:
            _failed("connection_stats", exc)
            return _offline()

    def connected(self, manager_id: int, dialog_id: int | None = None) -> Connected:
        """`async with presence.connected(manager_id, dialog_id):` around an admin stream: touches on
        enter, heartbeats every third of NOTIFIER_PRESENCE_TTL_SECONDS while open, leaves on exit, also
        when the stream is cancelled (the browser went away). Bad ids raise InvalidInput here, at once."""
        return Connected(self, check_id("manager_id", manager_id), check_optional_id("dialog_id", dialog_id))


class Connected:
    """The context manager behind `Presence.connected`; one use per instance."""

    def __init__(self, presence: Presence, manager_id: int, dialog_id: int | None) -> None:
        self._presence, self.manager_id, self.dialog_id = presence, manager_id, dialog_id
        self._beat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Connected:
        await self._presence.atouch(self.manager_id, self.dialog_id)
        interval = get_settings().presence_ttl_seconds / 3
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat(interval))
        return self

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._presence.atouch(self.manager_id, self.dialog_id)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The leave runs in a task of its own: a cancelled stream (anyio cancels again at every await
        # inside a cancelled scope) still leaves; this await may be interrupted, the leave is not.
        leaving = asyncio.get_running_loop().create_task(self._leave())
        _leaving.add(leaving)
        leaving.add_done_callback(_leaving.discard)
        await asyncio.shield(leaving)

    async def _leave(self) -> None:
        beat, self._beat = self._beat, None
        if beat is not None:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)  # a touch in flight lands before the leave
        await self._presence.aleave(self.manager_id, self.dialog_id)
