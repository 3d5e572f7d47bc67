"""The baseline for `bench.latency`: a bare Celery app whose one task records how late it started.

    BENCH_BROKER=redis://127.0.0.1:PORT/2 python -m celery -A bench._echo_app worker -P solo -Q celery ...

`stamp.apply_async((time.time(),))` -> the worker appends (start - sent) to the Redis list `echo:lag`: the bare
Celery round trip from publishing a message to a task starting, on the same Redis, in the same run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

BROKER = os.environ["BENCH_BROKER"]
LAGS = "echo:lag"

app = Celery("echo", broker=BROKER)
# Like our worker: late acks, prefetch of one; results off.
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True, task_acks_late=True,
                worker_prefetch_multiplier=1)
_client: list[Any] = []


@app.task(name="echo.stamp")  # type: ignore[untyped-decorator]
def stamp(sent_at: float) -> None:
    lag = time.time() - sent_at
    if not _client:
        _client.append(redis.Redis.from_url(BROKER))
    _client[0].rpush(LAGS, lag)
