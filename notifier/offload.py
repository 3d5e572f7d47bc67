"""Blocking database calls from asyncio code, on a small thread pool of our own: never on the event loop.

Why a dedicated `ThreadPoolExecutor` rather than `asyncio.to_thread` or anyio's default limiter: those are
shared with the host's own blocking work (Starlette runs every sync endpoint and dependency on anyio's
40 threads), so a slow or unreachable database, where each of our calls waits out its timeouts, would
starve the host too. Ours is exactly as large as the engine's connection pool (`notifier.db`: 5 + 5
overflow): a thread beyond it would only block on pool checkout, while a call beyond it waits in the
executor's queue and holds nothing. The standard library is enough, so `worker.client` can use it in
hosts without anyio.

A cancelled await (the browser went away) does not stop a call already running in its thread: a write
such as `mark_read` completes or fails on its own, only its result is dropped; a call still queued for a
thread is dropped with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MAX_THREADS = 10  # notifier.db: pool_size=5 + max_overflow=5

_pool: tuple[int, ThreadPoolExecutor] | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None or pool[0] != os.getpid():  # a forked child (uvicorn/gunicorn workers) gets its own
        with _lock:
            pool = _pool
            if pool is None or pool[0] != os.getpid():
                pool = _pool = (os.getpid(), ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="notifier-db"))
    return pool[1]


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on our pool, awaited; context variables (log context, tracing) go with it."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_executor(), call)
