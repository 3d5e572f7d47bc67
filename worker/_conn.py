"""Connections behind `worker.client`: Redis per host thread and per event loop, the engine, counters.

Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

import redis.asyncio
from sqlalchemy import Engine

from notifier.config import Settings, get_settings
from notifier.db import get_engine
from notifier.redis_conn import client_for, resolve_url
from notifier.store import AsyncStore, HotScript, Store

# Counters a host can export to its metrics; failures here mean the reconciler will have to catch up.
stats: dict[str, int] = {
    "scheduled": 0, "coalesced": 0, "schedule_failures": 0, "presence_failures": 0, "clear_failures": 0,
}

_local = threading.local()
# One asyncio client per event loop (a client is bound to the loop it was made on).
_async_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Settings, AsyncStore]] = weakref.WeakKeyDictionary()


def store() -> Store:
    settings = get_settings()
    current: Store | None = getattr(_local, "store", None)
    # The settings object itself, not its id(): a new Settings may be given the address of one that is
    # gone, and would then be served the old one's Redis.
    if current is None or _local.pid != os.getpid() or _local.settings is not settings:
        current = Store(client_for(resolve_url(settings)))
        _local.store, _local.pid, _local.settings = current, os.getpid(), settings
        _local.hot = current.hot_schedule()
    return current


def hot() -> HotScript:
    store()
    script: HotScript = _local.hot
    return script


def async_store(settings: Settings | None = None) -> AsyncStore:
    """This event loop's store (made on first use; `aclose` closes it)."""
    settings = settings or get_settings()
    loop = asyncio.get_running_loop()
    cached = _async_stores.get(loop)
    if cached is None or cached[0] is not settings:
        client = redis.asyncio.Redis.from_url(
            resolve_url(settings), socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
        )
        cached = _async_stores[loop] = (settings, AsyncStore(client))
    return cached[1]


async def aclose() -> None:
    cached = _async_stores.pop(asyncio.get_running_loop(), None)
    if cached is not None:
        await cached[1].close()


def engine() -> Engine:
    return get_engine(get_settings().database_url)
