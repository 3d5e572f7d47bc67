"""Many deliveries in flight per worker process, each waiting only for its own remote server.

A delivery spends nearly all of its time waiting: about four round trips to the mail server (MAIL, RCPT,
DATA, end of data) or one to the push service. One delivery at a time per process would make the round
trip the limit (at 20 ms, about 12 mails a second). So each process sends on *lanes*: one per remote
server (the SMTP host, each push service origin), each with its own threads, so that a slow or stalled
server fills its own lane and nobody else's.

A lane takes its deliveries in small groups. A group is claimed, read and decided again together
(`notifier.deliver.run_deliveries`: one statement per kind of fact for the whole group), then all of its
sends start at once on the lane's send threads, right after the decision, and each is recorded as it
was alone. A lane never has more than NOTIFIER_MAX_IN_FLIGHT_PER_HOST sends in flight: its groups are
that many deliveries in all (`Lane.group_size` x `Lane.groups`), and a send never waits for a thread
after its decision was made.

`run_batch` hands a batch to the lanes and waits for it at most `wait_seconds`: what is still running
then finishes in the background (the process keeps its lanes between tasks), so a stalled server never
holds up the next batch either. Nothing is lost if the process dies meanwhile: a claimed delivery's send
lease, or a queued one's enqueue lease, expires and the sweeper hands it out again, counting attempts.

Public: `Lanes`, `Lane`, `lane_for`, `BatchResult`, `run_batch`.
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
from notifier.channels.base import DeliveryResult
from notifier.config import Settings
from notifier.deliver import DeliveryOutcome, Send, run_deliveries
from notifier.enums import Channel
from notifier.errors import Unavailable
from notifier.outages import map_outages
from notifier.retry import describe
from notifier.runtime import Runtime

log = logging.getLogger(__name__)

Outcome = DeliveryOutcome | Unavailable
Finished = Callable[[int, Outcome], None]


def lane_for(route: snapshot.Route | None, settings: Settings) -> str:
    """The remote server a delivery waits for: `smtp host:port`, `push https://origin`, or `outbox`."""
    if route is None:
        return "unknown"  # no such delivery: run_deliveries says so at once
    if route.channel is Channel.EMAIL:
        return f"smtp {settings.smtp_host}:{settings.smtp_port}" if settings.smtp_host else "outbox"
    if route.endpoint is None:
        return "push ?"  # the subscription is gone: decided (skipped) without sending
    parts = urlsplit(route.endpoint)
    return f"push {parts.scheme}://{parts.netloc}".lower()


class Lane:
    """One remote server's threads: `groups` threads that claim, read and decide a group of up to
    `group_size` deliveries each, and `per_host` threads that send (each keeps its own connection)."""

    def __init__(self, name: str, per_host: int) -> None:
        self.name = name
        self.group_size = max(1, per_host // 2)
        self.groups = per_host // self.group_size
        self._deciders = ThreadPoolExecutor(self.groups, thread_name_prefix="notifier-decide")
        self._senders = ThreadPoolExecutor(per_host, thread_name_prefix="notifier-send")
        self._lock = threading.Lock()
        self._in_flight = 0
        self.peak = 0  # the most sends this lane ever had in flight at once (for tests and operators)

    def submit(self, fn: Callable[[], dict[int, Outcome]]) -> Future[dict[int, Outcome]]:
        return self._deciders.submit(fn)

    def send_all(self, sends: list[Send]) -> list[DeliveryResult | Exception]:
        """Every send of a group at once, on this lane's send threads; each result or error in order."""
        futures = [self._senders.submit(self._counted, send) for send in sends]
        results: list[DeliveryResult | Exception] = []
        for future in futures:
            error = future.exception()
            if error is None:
                results.append(future.result())
            elif isinstance(error, Exception):
                results.append(error)
            else:
                raise error  # KeyboardInterrupt, SystemExit: not a delivery's business
        return results

    def _counted(self, send: Send) -> DeliveryResult:
        with self._lock:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
        try:
            return send()
        finally:
            with self._lock:
                self._in_flight -= 1

    def close(self, wait_for_running: bool) -> None:
        self._deciders.shutdown(wait=wait_for_running, cancel_futures=True)
        self._senders.shutdown(wait=wait_for_running, cancel_futures=True)


class Lanes:
    """This process's lanes, created on first use and kept for the life of the process."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._lanes: dict[str, Lane] = {}
        self._lock = threading.Lock()
        self._closed = False

    def lane(self, name: str) -> Lane:
        with self._lock:
            if self._closed:
                raise Unavailable("worker", "this process is shutting down and sends nothing more")
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = Lane(name, self.per_host)
            return lane

    @property
    def peak(self) -> dict[str, int]:
        with self._lock:
            return {name: lane.peak for name, lane in self._lanes.items()}

    def close(self, wait_for_running: bool = True) -> None:
        """Stop taking work; let running deliveries finish (their own timeouts bound it); drop queued ones,
        which are pending in the ledger with an enqueue lease: the sweeper hands them out again."""
        with self._lock:
            self._closed = True
            lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.close(wait_for_running)


@dataclass
class BatchResult:
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    still_running: list[int] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values()
                   if isinstance(o, DeliveryOutcome) and o.status is not None and o.status.value == status)


def _group(rt: Runtime, lane: Lane, delivery_ids: list[int], finished: Finished, now: float | None) -> dict[int, Outcome]:
    results: dict[int, Outcome]
    try:
        with map_outages():
            results = dict(run_deliveries(rt, delivery_ids, now, send_all=lane.send_all))
    except Unavailable as exc:
        # Rows already recorded keep their record; the rest are retried (a claimed one after its lease).
        results = {d: exc for d in delivery_ids}
    for delivery_id, outcome in results.items():
        try:
            finished(delivery_id, outcome)
        except Exception as exc:  # noqa: BLE001 - the ledger holds the truth; the sweeper re-sends what a lost retry leaves
            log.warning("delivery id=%s follow-up not queued error=%s", delivery_id, describe(exc))
    return results


def run_batch(rt: Runtime, delivery_ids: list[int], finished: Finished, wait_seconds: float,
              now: float | None = None) -> BatchResult:
    """Send a batch on this process's lanes. `finished(id, outcome)` runs in the lane as each one ends
    (the caller queues retries there); the batch returns when all have ended or after `wait_seconds`.
    `now` (tests) stands for the clock of every delivery of the batch."""
    with map_outages(), rt.engine.connect() as conn:
        routes = snapshot.load_routes(conn, delivery_ids)
    by_lane: dict[str, list[int]] = {}
    for delivery_id in dict.fromkeys(delivery_ids):
        by_lane.setdefault(lane_for(routes.get(delivery_id), rt.settings), []).append(delivery_id)
    lanes = rt.lanes()
    futures: dict[Future[dict[int, Outcome]], list[int]] = {}
    for name, ids in by_lane.items():
        lane = lanes.lane(name)
        for i in range(0, len(ids), lane.group_size):
            group = ids[i : i + lane.group_size]
            futures[lane.submit(partial(_group, rt, lane, group, finished, now))] = group
    wait(futures, timeout=wait_seconds)
    result = BatchResult()
    for future, group in futures.items():
        if not future.done():
            result.still_running += group
        elif (error := future.exception()) is not None:
            # A bug outside run_deliveries' own handling: the deliveries stay leased, the sweeper takes them.
            log.error("deliveries %s crashed in their lane error=%s", group, describe(error))
        else:
            result.outcomes.update(future.result())
    return result
