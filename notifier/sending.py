"""Many deliveries in flight per worker process, each waiting only for its own remote server.

A delivery spends nearly all of its time waiting: about four round trips to the mail server (MAIL, RCPT,
DATA, end of data) or one to the push service. One delivery at a time per process would make the round
trip the limit (at 20 ms, about 12 mails a second). So each process sends on *lanes*: one small thread
pool per remote server (the SMTP host, each push service origin), NOTIFIER_MAX_IN_FLIGHT_PER_HOST threads
wide. Every thread runs the whole `run_delivery` of one delivery (claim, decide again, render, send,
record), so every guarantee of a single delivery holds unchanged; the lanes only decide how many run at
once and where they wait. A slow or stalled server fills its own lane and nobody else's.

`run_batch` hands a batch to the lanes and waits for it at most `wait` seconds: what is still running
then finishes in the background (the process keeps its lanes between tasks), so a stalled server never
holds up the next batch either. Nothing is lost if the process dies meanwhile: a claimed delivery's send
lease, or a queued one's enqueue lease, expires and the sweeper hands it out again, counting attempts.

Public: `Lanes`, `lane_for`, `BatchResult`, `run_batch`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

from notifier import snapshot
from notifier.config import Settings
from notifier.deliver import DeliveryOutcome, run_delivery
from notifier.enums import Channel
from notifier.errors import Unavailable
from notifier.outages import map_outages
from notifier.retry import describe
from notifier.runtime import Runtime

log = logging.getLogger(__name__)

Finished = Callable[[int, "DeliveryOutcome | Unavailable"], None]


def lane_for(route: snapshot.Route | None, settings: Settings) -> str:
    """The remote server a delivery waits for: `smtp host:port`, `push https://origin`, or `outbox`."""
    if route is None:
        return "unknown"  # no such delivery: run_delivery says so at once
    if route.channel is Channel.EMAIL:
        return f"smtp {settings.smtp_host}:{settings.smtp_port}" if settings.smtp_host else "outbox"
    if route.endpoint is None:
        return "push ?"  # the subscription is gone: decided (skipped) without sending
    parts = urlsplit(route.endpoint)
    return f"push {parts.scheme}://{parts.netloc}".lower()


class Lanes:
    """One thread pool per remote server, created on first use and kept for the life of the process."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}  # the most deliveries one lane ever ran at once (for tests and metrics)

    def submit(self, lane: str, fn: Callable[[], DeliveryOutcome | Unavailable]) -> Future[DeliveryOutcome | Unavailable]:
        with self._lock:
            if self._closed:
                raise Unavailable("worker", "this process is shutting down and sends nothing more")
            pool = self._pools.get(lane)
            if pool is None:
                pool = self._pools[lane] = ThreadPoolExecutor(self.per_host, thread_name_prefix="notifier-send")
        return pool.submit(self._counted, lane, fn)

    def _counted(self, lane: str, fn: Callable[[], DeliveryOutcome | Unavailable]) -> DeliveryOutcome | Unavailable:
        with self._lock:
            now = self._in_flight[lane] = self._in_flight.get(lane, 0) + 1
            self.peak[lane] = max(self.peak.get(lane, 0), now)
        try:
            return fn()
        finally:
            with self._lock:
                self._in_flight[lane] -= 1

    def close(self, wait_for_running: bool = True) -> None:
        """Stop taking work; let running deliveries finish (their own timeouts bound it); drop queued ones,
        which are pending in the ledger with an enqueue lease: the sweeper hands them out again."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=wait_for_running, cancel_futures=True)


@dataclass
class BatchResult:
    outcomes: dict[int, DeliveryOutcome | Unavailable] = field(default_factory=dict)
    still_running: list[int] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values()
                   if isinstance(o, DeliveryOutcome) and o.status is not None and o.status.value == status)


def _one(rt: Runtime, delivery_id: int, finished: Finished, now: float | None) -> DeliveryOutcome | Unavailable:
    result: DeliveryOutcome | Unavailable
    try:
        with map_outages():
            result = run_delivery(rt, delivery_id, now)
    except Unavailable as exc:
        result = exc
    try:
        finished(delivery_id, result)
    except Exception as exc:  # noqa: BLE001 - the ledger holds the truth; the sweeper re-sends what a lost retry leaves
        log.warning("delivery id=%s follow-up not queued error=%s", delivery_id, describe(exc))
    return result


def run_batch(rt: Runtime, delivery_ids: list[int], finished: Finished, wait_seconds: float,
              now: float | None = None) -> BatchResult:
    """Send a batch on this process's lanes. `finished(id, outcome)` runs in the lane as each one ends
    (the caller queues retries there); the batch returns when all have ended or after `wait_seconds`.
    `now` (tests) stands for the clock of every delivery of the batch."""
    with map_outages(), rt.engine.connect() as conn:
        routes = snapshot.load_routes(conn, delivery_ids)
    lanes = rt.lanes()
    futures = {
        delivery_id: lanes.submit(lane_for(routes.get(delivery_id), rt.settings), partial(_one, rt, delivery_id, finished, now))
        for delivery_id in dict.fromkeys(delivery_ids)
    }
    wait(futures.values(), timeout=wait_seconds)
    result = BatchResult()
    for delivery_id, future in futures.items():
        if not future.done():
            result.still_running.append(delivery_id)
        elif (error := future.exception()) is not None:
            # A bug outside run_delivery's own handling: the delivery stays leased, the sweeper takes it.
            log.error("delivery id=%s crashed in its lane error=%s", delivery_id, describe(error))
        else:
            result.outcomes[delivery_id] = future.result()
    return result
