"""Many deliveries in flight per worker process, each waiting only for its own remote server.

A delivery spends nearly all of its time waiting: about four round trips to the mail server (MAIL, RCPT,
DATA, end of data) or one to the push service. One delivery at a time per process would make the round
trip the limit (at 20 ms, about 12 mails a second). So each process sends on *lanes*: one per remote
server (the SMTP host, each push service origin), each with its own threads, so that a slow or stalled
server fills its own lane and nobody else's.

A lane takes its deliveries in small groups. A group is claimed, read and decided again together
(`notifier.deliver.run_deliveries`: one statement per kind of fact for the whole group), then all of its
sends start at once on the lane's send threads, right after the decision, and each is recorded as it
was alone. A lane never has more than NOTIFIER_MAX_IN_FLIGHT_PER_HOST deliveries between claim and the
end of their send: each holds one of that many permits, taken with its group before the claim and given
back as its own send ends, so a send never waits for a thread after its decision was made, and the next
group is read while the last one is still being recorded. Deliveries queue in their lane (up to
LANE_BACKLOG, their enqueue leases kept alive meanwhile) and groups fill up across batches, so a batch
hands its deliveries over and the worker takes the next one: a slow server's backlog grows in its own
lane while every other lane goes on at its own pace. Once a lane holds LANE_BACKLOG and does not keep up
(its server is slow or stalled), a batch leaves that lane's deliveries in the ledger instead, pending under
the enqueue lease they came with, for the sweeper to hand out again when it runs out: the batch's other
deliveries go on at once, and the process keeps taking batches for its other lanes.

`run_batch` hands a batch to the lanes and returns as soon as the process has room for another (the sending
task; `Lanes.wait_for_room`: a process whose lanes are all busy leaves the next batch to a sibling), or
once all of its deliveries have ended (callers that want the outcomes), waiting at most `wait_seconds`:
what is still queued or running then goes on in the background (the process keeps its lanes between
tasks), so a stalled server never holds up the next batch either. Nothing is lost if the process dies
meanwhile: a claimed delivery's send lease, or a queued one's enqueue lease, expires and the sweeper hands
it out again, counting attempts.

Public: `Lanes`, `Lane`, `lane_for`, `BatchResult`, `run_batch`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

from notifier import ledger, snapshot
from notifier.channels.base import DeliveryResult
from notifier.config import Settings
from notifier.deliver import DeliveryOutcome, Send, run_deliveries
from notifier.enums import Channel
from notifier.errors import Unavailable
from notifier.ledger.deliveries import ENQUEUE_LEASE
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


# Deliveries that may wait in one lane of one process. A lane takes every batch at once up to this many, so
# the worker keeps taking batches while one server is slow and the others' lanes go on at their own pace;
# what waits in a lane keeps its enqueue lease alive (renewed every RENEW_EVERY seconds), and a stopping
# worker hands it back to the sweeper at once. Not more: a process that takes far more than its share of a
# burst sends the rest alone while its siblings idle (bench.deliver: with 5,000, one of two processes sent
# its last 2,000 pushes by itself). A full lane that keeps up makes its process wait before the next batch
# (`Lanes.wait_for_room`); one that does not is given nothing more (`run_batch`).
LANE_BACKLOG = 1500
RENEW_EVERY = ENQUEUE_LEASE / 3
# A lane "keeps up" when it ended at least as many sends in the last KEEPS_UP_WINDOW seconds as it has
# permits: what waits in it now will be gone in about that long.
KEEPS_UP_WINDOW = 1.0


def _by_clock(items: list[_Item], write: Callable[..., int], done: str) -> None:
    """Renew or release the enqueue leases of waiting deliveries, at each one's clock (tests pass theirs).
    Best effort: a lease not renewed only means the sweeper queues the delivery again, and the first claim
    wins; one not released runs out by itself."""
    groups: dict[tuple[int, float], tuple[Runtime, list[int]]] = {}
    wall = time.time()
    for item in items:
        clock = item.now if item.now is not None else wall
        groups.setdefault((id(item.rt), clock), (item.rt, []))[1].append(item.delivery_id)
    for (_rt_id, clock), (rt, ids) in groups.items():
        try:
            count = write(rt.engine, ids, clock)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("enqueue leases of %d waiting deliveries not %s error=%s", len(ids), done, describe(exc))
        else:
            log.debug("enqueue leases %s: %d of %d waiting deliveries", done, count, len(ids))


@dataclass(eq=False)
class _Item:
    """One delivery waiting in a lane for a decider, with what its group needs and where its outcome goes."""

    delivery_id: int
    rt: Runtime
    now: float | None
    finished: Finished
    future: Future[Outcome] = field(default_factory=Future)

    def joins(self, first: _Item) -> bool:
        """May this delivery be decided in one group with `first`? (Same process state, clock and callback.)"""
        return self.rt is first.rt and self.now == first.now and self.finished is first.finished


class _Permits:
    """The send permits one group holds: one per delivery from its claim until its own send has ended
    (or until the decision not to send it)."""

    def __init__(self, lane: Lane, count: int) -> None:
        self._lane = lane
        self._held = count

    def release(self, count: int) -> None:
        with self._lane._cond:
            self.release_locked(count)

    def release_locked(self, count: int) -> None:
        """`release`, with the lane's lock already held."""
        count = min(count, self._held)
        self._held -= count
        self._lane._free += count
        if count and self._lane._queue:
            self._lane._cond.notify()  # a decider waiting for permits; it wakes the next if there is more

    def keep(self, count: int) -> None:
        """Keep `count` permits (the sends about to start); give back the rest."""
        self.release(self._held - count)

    def release_all(self) -> None:
        self.release(self._held)


@dataclass(frozen=True)
class _LaneState:
    """What a lane says about taking another batch (`Lanes.wait_for_room`)."""

    active: bool  # deliveries waiting or being sent
    short: bool  # fewer than `low` waiting: it may run dry before another batch comes
    busy: bool  # `low` or more waiting, and it keeps up (sent `low` in the last KEEPS_UP_WINDOW, or got its
    # work less than that ago): it will soon be short
    full: bool  # `backlog` waiting: nothing more for it

    @property
    def stuck(self) -> bool:
        """`backlog` waiting and not keeping up: its server is slow or stalled, and what it is given now
        would only wait. (Not full, neither short nor busy: slow too; no reason to wait for it either.)"""
        return self.full and not self.busy


class Lane:
    """One remote server's threads: deciders that claim, read and decide a group of up to `group_size`
    deliveries each, `per_host` threads that send (a push thread keeps its own connection; mails share the
    SMTP pool's, one per send in flight), and a queue of up to `backlog` deliveries waiting for them.

    Deliveries wait in the lane's queue; a decider takes the next group as soon as the lane has a send
    permit for each of them (NOTIFIER_MAX_IN_FLIGHT_PER_HOST permits in all). A delivery holds its permit
    from its claim until its own send has ended, so a decided delivery never waits to be sent, and a
    group's bookkeeping after its sends (recording them) holds none: the next group reads meanwhile.
    Groups fill up from consecutive batches, so a lane under load decides full groups."""

    def __init__(self, name: str, per_host: int, room: threading.Condition) -> None:
        self.name = name
        self._room = room  # its process's batches wait here for room (`Lanes.wait_for_room`)
        self.group_size = max(1, per_host // 2)
        # Enough deciders to hold every permit, and one more to read while another group records.
        self.groups = per_host // self.group_size + 1
        self._cond = threading.Condition()  # deciders wait here: for deliveries, permits, or the end
        self._queue: deque[_Item] = deque()
        self._free = per_host
        self._closed = False
        self._renewed = time.monotonic()
        self.backlog = LANE_BACKLOG
        self.renew_every = RENEW_EVERY
        self._in_flight = 0
        self.peak = 0  # the most sends this lane ever had in flight at once (for tests and operators)
        self.per_host = per_host
        self.low = per_host  # fewer deliveries waiting than this: the lane may run dry before the next batch
        self._ended: deque[float] = deque(maxlen=self.low)  # when its last `low` sends ended (monotonic)
        self._busy_since = 0.0  # when it last got work after having none (monotonic)
        self._senders = ThreadPoolExecutor(per_host, thread_name_prefix="notifier-send")
        self._deciders = [threading.Thread(target=self._decide_loop, name=f"notifier-decide-{i}", daemon=True)
                          for i in range(self.groups)]
        for thread in self._deciders:
            thread.start()

    def put(self, items: list[_Item]) -> None:
        with self._cond:
            if self._closed:
                raise Unavailable("worker", "this process is shutting down and sends nothing more")
            if not self._queue:
                self._renewed = time.monotonic()  # their enqueue leases are fresh
                if self._free == self.per_host:
                    self._busy_since = self._renewed  # it was idle: from now on, it has work
            self._queue.extend(items)
            self._cond.notify_all()

    def state(self) -> _LaneState:
        with self._cond:
            waiting = len(self._queue)
            if self._closed:
                return _LaneState(active=False, short=True, busy=False, full=False)
            # It keeps up if it sent `low` in the last KEEPS_UP_WINDOW, or has had work for less than that.
            since = time.monotonic() - KEEPS_UP_WINDOW
            keeps_up = (len(self._ended) == self.low and self._ended[0] >= since) or self._busy_since >= since
            return _LaneState(active=bool(waiting) or self._free < self.per_host, short=waiting < self.low,
                              busy=waiting >= self.low and keeps_up, full=waiting >= self.backlog)

    def _next_group(self) -> int:
        """How many deliveries the next group takes from the head of the queue (0: none waiting)."""
        if not self._queue:
            return 0
        first, count = self._queue[0], 1
        for item in itertools.islice(self._queue, 1, self.group_size):
            if not item.joins(first):
                break
            count += 1
        return count

    def _decide_loop(self) -> None:
        while True:
            items: list[_Item] = []
            renew: list[_Item] = []
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._queue and time.monotonic() - self._renewed >= self.renew_every:
                        renew, self._renewed = list(self._queue), time.monotonic()
                        break
                    size = self._next_group()
                    if 0 < size <= self._free:
                        items = [self._queue.popleft() for _ in range(size)]
                        self._free -= size
                        if self._queue and self._free:
                            self._cond.notify()  # another decider may take the next group
                        break
                    self._cond.wait(self.renew_every)
            if items:
                with self._room:
                    self._room.notify_all()  # room in the queue for a waiting batch
            if renew:
                _by_clock(renew, ledger.renew_enqueue_leases, "renewed")
                continue
            permits = _Permits(self, len(items))
            try:
                self._run_group(items, permits)
            finally:
                permits.release_all()

    def _run_group(self, items: list[_Item], permits: _Permits) -> None:
        first, ids = items[0], [item.delivery_id for item in items]
        results: dict[int, Outcome]
        try:
            with map_outages():
                results = dict(run_deliveries(first.rt, ids, first.now, send_all=partial(self.send_all, permits=permits)))
        except Unavailable as exc:
            # Rows already recorded keep their record; the rest are retried (a claimed one after its lease).
            results = {d: exc for d in ids}
        except BaseException as exc:  # noqa: BLE001 - a bug: its batch logs it; the sweeper takes the leased rows
            for item in items:
                item.future.set_exception(exc)
            return
        for item in items:
            outcome = results[item.delivery_id]
            try:
                item.finished(item.delivery_id, outcome)
            except Exception as exc:  # noqa: BLE001 - the ledger holds the truth; the sweeper re-sends what a lost retry leaves
                log.warning("delivery id=%s follow-up not queued error=%s", item.delivery_id, describe(exc))
            item.future.set_result(outcome)

    def send_all(self, sends: list[Send], permits: _Permits) -> list[DeliveryResult | Exception]:
        """Every send of a group at once, on this lane's send threads; each result or error in order."""
        permits.keep(len(sends))  # the deliveries decided not to go give their permits back now
        futures = [self._senders.submit(self._counted, send, permits) for send in sends]
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

    def _counted(self, send: Send, permits: _Permits) -> DeliveryResult:
        with self._cond:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
        try:
            return send()
        finally:
            with self._cond:
                self._in_flight -= 1
                self._ended.append(time.monotonic())
                permits.release_locked(1)

    def close(self, wait_for_running: bool) -> None:
        """Take nothing more; queued deliveries are dropped (pending in the ledger under their enqueue lease,
        so the sweeper hands them out again); groups already taken finish if `wait_for_running`."""
        with self._cond:
            self._closed = True
            dropped, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        with self._room:
            self._room.notify_all()
        for item in dropped:
            item.future.cancel()
        _by_clock(dropped, ledger.release_enqueue_leases, "released")
        if wait_for_running:
            for thread in self._deciders:
                thread.join()
        self._senders.shutdown(wait=wait_for_running, cancel_futures=True)


class Lanes:
    """This process's lanes, created on first use and kept for the life of the process."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._lanes: dict[str, Lane] = {}
        self._lock = threading.Lock()
        self._room = threading.Condition()
        self._closed = False

    def lane(self, name: str) -> Lane:
        with self._lock:
            if self._closed:
                raise Unavailable("worker", "this process is shutting down and sends nothing more")
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = Lane(name, self.per_host, self._room)
            return lane

    def wait_for_room(self, used: list[Lane], timeout: float) -> bool:
        """Until this process may take another batch, after one that went to the lanes `used`: when none of
        those is full while keeping up, and either some lane at work in this process is short or none of
        those is busy (`_LaneState`). False after `timeout`.

        So a process whose lanes are all busy takes no more work for a moment, and Celery hands the next
        batch to a sibling process, instead of heaping the burst on the one that answered first (with room
        up to LANE_BACKLOG alone, one of two sending processes took three quarters of a burst of 1,000 and
        sent its last second by itself). A lane whose server is slow or stalled is no reason to wait; and
        while any lane is short the process goes on taking work, so the pushes are not paced by the mails."""
        deadline = time.monotonic() + timeout
        with self._lock:
            everyone = list(self._lanes.values())
        with self._room:
            while not _ready([lane.state() for lane in used], [lane.state() for lane in everyone]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # Woken as deciders take deliveries; a lane that stops keeping up changes no state: look again.
                self._room.wait(min(left, KEEPS_UP_WINDOW / 4))
            return True

    @property
    def peak(self) -> dict[str, int]:
        with self._lock:
            return {name: lane.peak for name, lane in self._lanes.items()}

    def close(self, wait_for_running: bool = True) -> None:
        """Stop taking work; let running deliveries finish (their own timeouts bound it); drop queued ones,
        handing their enqueue leases back so that the sweeper queues them again at once (`Lane.close`)."""
        with self._lock:
            self._closed = True
            lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.close(wait_for_running)


def _ready(used: list[_LaneState], everyone: list[_LaneState]) -> bool:
    if any(state.full and state.busy for state in used):
        return False  # a stuck lane takes nothing more (`run_batch`): no reason to wait for it
    return any(state.active and state.short for state in everyone) or not any(state.busy for state in used)


@dataclass
class BatchResult:
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    still_running: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)  # not taken: their lane is stuck; the sweeper hands them out again

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values()
                   if isinstance(o, DeliveryOutcome) and o.status is not None and o.status.value == status)


def run_batch(rt: Runtime, delivery_ids: list[int], finished: Finished, wait_seconds: float,
              now: float | None = None, until_queued: bool = False) -> BatchResult:
    """Send a batch on this process's lanes. `finished(id, outcome)` runs in the lane as each one ends
    (the caller queues retries there); the batch returns when all have ended or after `wait_seconds`,
    or, `until_queued`, as soon as the process has room for another batch (`Lanes.wait_for_room`): the
    worker then takes its next batch while these wait and send.
    A lane that is stuck (`_LaneState.stuck`) is given nothing: its deliveries stay pending in the ledger
    under their enqueue lease, and the sweeper queues them again when it runs out (no attempt is counted).
    `now` (tests) stands for the clock of every delivery of the batch."""
    with map_outages(), snapshot.reading(rt.engine) as conn:
        routes = snapshot.load_routes(conn, delivery_ids)
    by_lane: dict[str, list[int]] = {}
    for delivery_id in dict.fromkeys(delivery_ids):
        by_lane.setdefault(lane_for(routes.get(delivery_id), rt.settings), []).append(delivery_id)
    lanes = rt.lanes()
    items: list[_Item] = []
    used: list[Lane] = []
    result = BatchResult()
    for name, ids in by_lane.items():
        lane = lanes.lane(name)
        if lane.state().stuck:
            log.warning("lane=%s full and not keeping up: %d deliveries left for the sweeper", name, len(ids))
            result.left += ids
            continue
        mine = [_Item(d, rt, now, finished) for d in ids]
        used.append(lane)
        lane.put(mine)
        items += mine
    if until_queued:
        lanes.wait_for_room(used, wait_seconds)
    else:
        wait([item.future for item in items], timeout=wait_seconds)
    crashed: dict[int, tuple[BaseException, list[int]]] = {}
    for item in items:
        if not item.future.done() or item.future.cancelled():
            result.still_running.append(item.delivery_id)  # a cancelled one: dropped at shutdown, still pending
        elif (error := item.future.exception()) is not None:
            crashed.setdefault(id(error), (error, []))[1].append(item.delivery_id)
        else:
            result.outcomes[item.delivery_id] = item.future.result()
    for error, ids in crashed.values():
        # A bug outside run_deliveries' own handling: the deliveries stay leased, the sweeper takes them.
        log.error("deliveries %s crashed in their lane error=%s", ids, describe(error))
    return result
