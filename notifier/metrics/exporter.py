"""The worker's /metrics: one HTTP exporter in the worker's main process, fed by every process of its pool.

Why prometheus-client's multiprocess mode: Celery's prefork pool runs tasks in forked children, each with
its own memory, so a counter kept in a child is invisible to an exporter in the parent; one exporter per
child would need a port per child and would lose a child's counts whenever the pool replaces it. In
multiprocess mode every process writes its samples to memory-mapped files in one directory and the
exporter sums them at scrape time, those of exited children included (a counter must not go back when a
child is replaced). The queue's gauges are not kept by any process: `QueueCollector` reads them from
Redis when Prometheus scrapes, in the exporter only.

Life cycle (worker/tasks.py connects it to Celery's signals):
- `prepare(settings)`: main process, before the pool forks (worker_init). Chooses the directory
  (PROMETHEUS_MULTIPROC_DIR if the operator set one, else a fresh temporary one), empties it and switches
  prometheus-client to multiprocess mode; children inherit both.
- `start(settings, store)`: once the worker is ready, listen on NOTIFIER_METRICS_ADDRESS:NOTIFIER_METRICS_PORT.
- `child_exited(pid)`: a pool child ended; its live-gauge files go, its counters stay.
- `stop()`: worker shutdown; a temporary directory is removed.
Nothing happens when NOTIFIER_METRICS_PORT is unset.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from notifier.config import Settings
from notifier.metrics import record
from notifier.store import Store

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class QueueCollector:
    """Pending, in-flight and parked checks, and how overdue the most overdue pending check is: read
    from Redis (one pipelined round trip) when scraped."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        return []  # registering must not touch Redis; the names are stable anyway

    def collect(self) -> Iterator[Metric]:
        try:
            pending, inflight, parked, earliest = self._store().queue_gauges()
        except (redis.RedisError, OSError) as exc:
            # No figure rather than a wrong one: the series go absent and the scrape still succeeds.
            log.warning("metrics queue gauges unavailable reason=redis_unavailable error=%s", type(exc).__name__)
            return
        overdue = max(0.0, time.time() - earliest) if earliest is not None else 0.0
        yield GaugeMetricFamily("notifier_pending_checks", "Checks waiting in Redis (due or not yet due).", value=pending)
        yield GaugeMetricFamily(
            "notifier_oldest_pending_age_seconds",
            "How long the most overdue pending check has been due (0: nothing is overdue).", value=overdue,
        )
        yield GaugeMetricFamily("notifier_inflight_checks", "Checks taken by a worker and not finished yet.", value=inflight)
        yield GaugeMetricFamily("notifier_parked_checks", "Checks that kept failing and wait for a new message.",
                                value=parked)


@dataclass
class _Exporter:
    directory: Path
    owned: bool  # a temporary directory we made (and remove), not the operator's
    server: Any = None


_current: _Exporter | None = None


def prepare(settings: Settings) -> Path | None:
    """Multiprocess mode for this process and the children it will fork; None when metrics are off."""
    global _current
    if settings.metrics_port is None:
        return None
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory, owned = Path(configured), False
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # a previous run's figures would add to ours
            stale.unlink()
    else:
        directory, owned = Path(tempfile.mkdtemp(prefix="notifier-metrics-")), True
        os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus-client picks its value class when first imported; it may have been imported before the
    # directory was known, so pick again, and rebuild our metric objects with it.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    record.reset()
    record.mark_started()
    _current = _Exporter(directory, owned)
    return directory


def start(settings: Settings, store: Callable[[], Store]) -> bool:
    """Serve /metrics; False (logged) when metrics are off or the port cannot be bound."""
    current = _current
    if current is None or settings.metrics_port is None:
        return False
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(current.directory))  # type: ignore[no-untyped-call]
    registry.register(QueueCollector(store))
    address, port = settings.metrics_address, settings.metrics_port
    try:
        server, _thread = start_http_server(port, address, registry=registry)
    except OSError as exc:
        log.error("metrics exporter not started address=%s port=%s error=%s", address, port, exc.strerror or exc)
        return False
    current.server = server
    log.info("metrics exporter listening address=%s port=%s", address, port)
    return True


def child_exited(pid: int) -> None:
    current = _current
    if current is not None:
        mark_process_dead(pid, str(current.directory))  # type: ignore[no-untyped-call]


def stop() -> None:
    global _current
    current, _current = _current, None
    if current is None:
        return
    if current.server is not None:
        current.server.shutdown()
        current.server.server_close()
    if current.owned:
        shutil.rmtree(current.directory, ignore_errors=True)
