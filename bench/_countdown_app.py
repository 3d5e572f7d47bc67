"""The baseline for `bench.pending`: a minimal Celery app whose only task is a no-op, default settings.

    BENCH_BROKER=redis://127.0.0.1:PORT/1 python -m celery -A bench._countdown_app worker -P solo ...

What "plain Celery countdown tasks" cost a worker: `noop.apply_async(countdown=...)` messages are taken off
the queue at once and held, unacknowledged, in the worker's memory until their ETA.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("countdown", broker=os.environ["BENCH_BROKER"])
# Results off (nothing to store for a no-op); retry-on-startup only silences Celery's deprecation warning.
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)


@app.task(name="countdown.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    return None
