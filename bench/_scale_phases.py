"""The Redis-side phases of `bench.scale`, each returning a plain result for one backlog size N.

Every phase runs against the benchmark's private redis-server: DB 0 holds our keys (and the `notifier`
Celery queue), DB 1 the bare Celery baseline's queue, DB 2 the previous layout's keys for comparison.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pending import key_bytes, process_tree, rss_mb, used_memory

ROOT = Path(__file__).resolve().parent.parent

FAR = 86400.0  # grace of the backlog: nothing falls due while it is measured
BACKLOG_BASE = 1_000_000  # dialog ids of the N pending dialogs
FRESH_BASE = 50_000_000  # dialog ids opened by the timed "first message" calls
MESSAGE_BASE = 100_000_000
FILL_BATCH = 1000  # Lua calls per pipeline when filling the backlog
OUR_QUEUE = "notifier"


# ---------------------------------------------------------------------------------------------- filling


MESSAGE_GAP_S = 7.5  # between a burst's messages


def single(_dialog_id: int) -> int:
    """One message per dialog: the backlog the targets speak of."""
    return 1


def mixed(dialog_id: int) -> int:
    """A mix of bursts: six dialogs in ten with one message, three with three, one with eight (too long
    for its bucket's compact encoding: it goes to `seen:long`)."""
    return (1, 1, 1, 1, 1, 1, 3, 3, 3, 8)[dialog_id % 10]


def burst(dialog_id: int, messages: int, seen_at: float) -> list[tuple[int, float]]:
    first = MESSAGE_BASE + dialog_id * 10
    return [(first + k, seen_at + MESSAGE_GAP_S * k) for k in range(messages)]


def fill_backlog(r: Any, n: int, seen_at: float, grace: float, base: int = BACKLOG_BASE,
                 bursts: Callable[[int], int] = single) -> None:
    """N pending dialogs, `bursts(dialog)` messages each, written by the schedule script itself (pipelined)."""
    from notifier.store import SCHEDULE_LUA, schedule_args, schedule_keys

    script = r.register_script(SCHEDULE_LUA)
    pipe = r.pipeline(transaction=False)
    for i, dialog_id in enumerate(range(base, base + n), 1):
        for message, at in burst(dialog_id, bursts(dialog_id), seen_at):
            script(keys=schedule_keys(dialog_id), args=schedule_args(dialog_id, message, at, grace), client=pipe)
        if i % FILL_BATCH == 0:
            pipe.execute()
    pipe.execute()


def fill_legacy(r: Any, n: int, seen_at: float, grace: float, base: int = BACKLOG_BASE,
                bursts: Callable[[int], int] = single) -> None:
    """The same backlog as the previous layout stored it: the pending zset, a `seen` hash with
    "message=time,..." per dialog and a `latest` hash (what a not yet upgraded API process still writes)."""
    from notifier.store import LEGACY_LATEST, LEGACY_SEEN, PENDING

    pipe = r.pipeline(transaction=False)
    for i, dialog_id in enumerate(range(base, base + n), 1):
        messages = burst(dialog_id, bursts(dialog_id), seen_at)
        pipe.hset(LEGACY_LATEST, str(dialog_id), str(messages[-1][0]))
        pipe.hset(LEGACY_SEEN, str(dialog_id), ",".join(f"{m}={at!r}" for m, at in messages))
        pipe.zadd(PENDING, {str(dialog_id): seen_at + grace}, lt=True)
        if i % FILL_BATCH == 0:
            pipe.execute()
    pipe.execute()


def our_keys(r: Any) -> list[str]:
    from notifier.store import LEGACY_LATEST, LEGACY_SEEN, PENDING, SEEN_PREFIX

    return [PENDING, LEGACY_SEEN, LEGACY_LATEST, *r.scan_iter(SEEN_PREFIX + "*", count=1000)]


# ---------------------------------------------------------------------------------------------- Redis bytes


@dataclass(frozen=True)
class RedisBytes:
    n: int
    per_dialog: float  # MEMORY USAGE (SAMPLES 0) of our keys / N, one message per dialog
    used_memory_per_dialog: float  # INFO used_memory growth / N (allocator and hash-table slack included)
    legacy_per_dialog: float  # the previous layout, same backlog, same server, MEMORY USAGE / N
    mixed_per_dialog: float  # a mix of bursts (see `mixed`): 2 messages per dialog on average
    mixed_legacy_per_dialog: float
    keys: int  # how many keys hold the backlog
    encodings: dict[str, int]  # OBJECT ENCODING of the seen hashes -> how many


def memory_of(r: Any, n: int, layout: Callable[..., None], bursts: Callable[[int], int], now: float) -> float:
    """MEMORY USAGE of our keys / N for a backlog written by `layout` (an empty database afterwards)."""
    r.flushdb()
    layout(r, n, now, FAR, bursts=bursts)
    try:
        return key_bytes(r, our_keys(r)) / n
    finally:
        r.flushdb()


def measure_redis_bytes(server_url: str, n: int) -> RedisBytes:
    """Fills DB 0 with N pending dialogs (left there for the next phases); DB 2 holds the comparisons
    (the previous layout, the mix of bursts) one at a time."""
    import redis

    from notifier.store import PENDING

    ours: Any = redis.Redis.from_url(redis_db(server_url, 0), decode_responses=True)
    other: Any = redis.Redis.from_url(redis_db(server_url, 2), decode_responses=True)
    try:
        now = time.time()
        fill_backlog(ours, 1, now, FAR)  # the script cache and the database's tables: not the backlog's cost
        ours.flushdb()
        before = used_memory(ours)
        fill_backlog(ours, n, now, FAR)
        after = used_memory(ours)
        keys = our_keys(ours)
        encodings: dict[str, int] = {}
        for k in keys:
            if k != PENDING and ours.exists(k):
                enc = str(ours.object("encoding", k))
                encodings[enc] = encodings.get(enc, 0) + 1
        return RedisBytes(
            n=n,
            per_dialog=key_bytes(ours, keys) / n,
            used_memory_per_dialog=(after - before) / n,
            legacy_per_dialog=memory_of(other, n, fill_legacy, single, now),
            mixed_per_dialog=memory_of(other, n, fill_backlog, mixed, now),
            mixed_legacy_per_dialog=memory_of(other, n, fill_legacy, mixed, now),
            keys=int(ours.dbsize()),
            encodings=encodings,
        )
    finally:
        ours.close()
        other.close()


# ---------------------------------------------------------------------------------------------- worker memory


@dataclass(frozen=True)
class WorkerMemory:
    n: int  # pending dialogs in Redis while the worker idled
    rss_mb: float  # VmRSS of the whole process tree of `notifier worker`, median of readings
    readings_mb: tuple[float, ...]
    processes: int
    ready_s: float


SETTLE_S = 3.0
READINGS = 3
READY_TIMEOUT_S = 90.0


class Deployment:
    """`notifier worker` as the README runs it: a supervisor, a control worker (queue `notifier`, prefork,
    embedded beat whose dispatcher looks at the backlog every second) and a sending worker (`notifier.send`).
    It runs in a session of its own, so stopping it ends exactly the processes it started."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "notifier.cli", "worker", "--loglevel", "warning"], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.started = time.monotonic()

    def wait_ready(self, broker: str, workers: int = 2) -> float:
        """Seconds until both workers answer a control ping."""
        from celery import Celery

        app = Celery("bench-scale-ping", broker=broker, set_as_current=False)
        app.conf.update(broker_connection_retry_on_startup=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"notifier worker exited early:\n{self.tail()}")
                if len(app.control.ping(timeout=0.5)) >= workers:
                    return time.monotonic() - self.started
            raise RuntimeError(f"notifier worker not ready after {READY_TIMEOUT_S:.0f} s:\n{self.tail()}")
        finally:
            app.close()

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the supervisor passes it on to both workers
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of the session we started
        self.proc.wait(timeout=10)


def measure_worker(server_url: str, env: dict[str, str], log_path: Path, n: int) -> WorkerMemory:
    """Resident memory of a real deployment started on the backlog already in DB 0, once idle."""
    deployment = Deployment(env, log_path)
    try:
        ready = deployment.wait_ready(redis_db(server_url, 0))
        time.sleep(SETTLE_S)
        readings = []
        for _ in range(READINGS):
            readings.append(rss_mb(deployment.proc.pid))
            time.sleep(1.0)
        if deployment.proc.poll() is not None:
            raise RuntimeError(f"notifier worker died:\n{deployment.tail()}")
        return WorkerMemory(n, round(statistics.median(readings), 1), tuple(round(x, 1) for x in readings),
                            len(process_tree(deployment.proc.pid)), round(ready, 2))  # fmt: skip
    finally:
        deployment.stop()


# ---------------------------------------------------------------------------------------------- schedule cost


@dataclass(frozen=True)
class Latency:
    p50_us: float
    p99_us: float
    mean_us: float
    calls: int


@dataclass(frozen=True)
class ScheduleCost:
    n: int
    apply_async: Latency  # baseline: bare Celery publish of a no-op task, same server, same rounds
    first: Latency  # schedule_fallback opening a new pending check
    followup: Latency  # schedule_fallback coalescing into one of the N pending checks
    pending_after: int


def latency(samples_ns: list[int]) -> Latency:
    s = sorted(samples_ns)

    def pct(p: float) -> float:
        return s[max(1, math.ceil(p / 100 * len(s))) - 1] / 1000.0

    return Latency(round(pct(50), 1), round(pct(99), 1), round(sum(s) / len(s) / 1000.0, 1), len(s))


def time_calls(fn: Callable[..., object], calls: Iterable[tuple[int, ...]]) -> list[int]:
    """Wall time of each call in ns, garbage collector off."""
    clock = time.perf_counter_ns
    out = []
    gc.disable()
    try:
        for args in calls:
            t0 = clock()
            fn(*args)
            out.append(clock() - t0)
    finally:
        gc.enable()
    return out


PATHS = ("apply_async", "first", "followup")
WARM_CALLS = 30  # untimed calls per path after switching to another backlog's Redis


@dataclass
class Caller:
    """The three paths of the schedule phase against one backlog (its own redis-server), each a callable
    over prepared arguments, and the samples taken so far."""

    n: int
    server_url: str  # DB 0: the backlog; DB 1: the baseline's queue
    settings: Any  # this backlog's NOTIFIER_* settings: schedule_fallback follows the process's settings
    noop: Any  # the baseline's Celery task, on DB 1 of the same server
    next_fresh: int = FRESH_BASE
    next_follow: int = 0
    next_message: int = MESSAGE_BASE * 2
    samples: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in PATHS})

    def activate(self) -> None:
        """Point this process at this backlog's Redis; untimed calls take the reconnection."""
        from notifier.config import set_settings

        set_settings(self.settings)
        for path in PATHS:
            self.run(path, WARM_CALLS, timed=False)

    def run(self, path: str, count: int, timed: bool = True) -> None:
        from worker import client

        if path == "apply_async":
            took = time_calls(self.noop.apply_async, [()] * count)
        else:
            took = time_calls(client.schedule_fallback, self._calls(path, count))
        if timed:
            self.samples[path] += took

    def _calls(self, path: str, count: int) -> list[tuple[int, int]]:
        calls = []
        for _ in range(count):
            self.next_message += 1
            if path == "first":
                calls.append((self.next_fresh, self.next_message))
                self.next_fresh += 1
            else:
                calls.append((BACKLOG_BASE + self.next_follow, self.next_message))
                self.next_follow = (self.next_follow + 1) % self.n
        return calls

    def purge_baseline(self) -> None:
        """Nobody consumes the baseline's no-op tasks: drop them between rounds."""
        import redis

        r: Any = redis.Redis.from_url(redis_db(self.server_url, 1))
        try:
            r.delete("celery")
        finally:
            r.close()

    def result(self) -> ScheduleCost:
        import redis

        from notifier.store import PENDING

        r: Any = redis.Redis.from_url(redis_db(self.server_url, 0))
        try:
            pending = int(r.zcard(PENDING))
        finally:
            r.close()
        apply_async, first, followup = (latency(self.samples[p]) for p in PATHS)
        return ScheduleCost(self.n, apply_async, first, followup, pending_after=pending)



def measure_schedule(callers: list[Caller], calls: int, block: int = 250) -> None:
    """`worker.client.schedule_fallback` with each caller's backlog in its Redis, against bare `apply_async`
    to the same server, in rounds: every round visits every backlog (order rotating) and runs `block`
    calls per path there (order rotating), so drift on a shared machine reaches every size and path alike."""
    rounds = max(1, math.ceil(calls / block))
    for i in range(rounds):
        for caller in callers[i % len(callers) :] + callers[: i % len(callers)]:
            caller.activate()
            for path in PATHS[i % 3 :] + PATHS[: i % 3]:
                caller.run(path, block)
            caller.purge_baseline()


# ---------------------------------------------------------------------------------------------- dispatcher


@dataclass(frozen=True)
class DispatchRate:
    n: int
    runs: int
    rate_per_s: float  # checks moved per second by notifier.check.dispatch, median over runs
    us_per_check: float
    publish_only_per_s: float  # baseline: the same chunk messages published with no Redis pop, median
    verified: bool  # every run: pending empty, N in flight, ceil(N/CHECK_CHUNK) messages in the queue


@dataclass
class Publisher:
    """What the beat task hands `dispatch`: chunks of due checks go to Celery; deliveries are counted."""

    task: Any
    messages: int = 0
    deliveries: int = 0

    def checks(self, chunk: list[int]) -> None:
        self.task.apply_async((chunk,))
        self.messages += 1

    def delivery(self, _delivery_id: int) -> None:
        self.deliveries += 1


def dispatch_once(rt: Any, task: Any, n: int) -> tuple[float, float, bool]:
    """(seconds dispatching N due checks, seconds publishing the same chunks alone, verified)."""
    from notifier.check import CHECK_CHUNK, dispatch
    from notifier.store import INFLIGHT, PENDING

    r = rt.store.r
    r.flushdb()
    fill_backlog(r, n, time.time() - rt.settings.grace_seconds - 3600.0, rt.settings.grace_seconds)
    publisher = Publisher(task)
    now = time.time()
    moved = 0
    t0 = time.perf_counter()
    while moved < n:
        got = dispatch(rt, publisher.checks, publisher.delivery, now)
        moved += got
        if got == 0:
            break
    took = time.perf_counter() - t0
    expected = math.ceil(n / CHECK_CHUNK)
    verified = (moved == n and int(r.zcard(PENDING)) == 0 and int(r.zcard(INFLIGHT)) == n
                and int(r.llen(OUR_QUEUE)) == expected == publisher.messages)  # fmt: skip
    r.delete(OUR_QUEUE)
    ids = list(range(BACKLOG_BASE, BACKLOG_BASE + n))
    t0 = time.perf_counter()
    for i in range(0, n, CHECK_CHUNK):
        task.apply_async((ids[i : i + CHECK_CHUNK],))
    publish_only = time.perf_counter() - t0
    r.delete(OUR_QUEUE)
    return took, publish_only, verified


def measure_dispatch(rt: Any, task: Any, n: int, min_checks: int = 100_000, max_runs: int = 10) -> DispatchRate:
    runs = max(1, min(max_runs, min_checks // n))
    results = [dispatch_once(rt, task, n) for _ in range(runs)]
    took = statistics.median(t for t, _, _ in results)
    publish_only = statistics.median(p for _, p, _ in results)
    return DispatchRate(
        n=n, runs=runs, rate_per_s=round(n / took), us_per_check=round(took / n * 1e6, 2),
        publish_only_per_s=round(n / publish_only), verified=all(v for _, _, v in results),
    )


def redis_db(server_url: str, db: int) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{db}"


def worker_env(server_url: str, db_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFIER_", "CELERY_", "BENCH_"))}
    return {
        **env,
        "NOTIFIER_REDIS_URL": redis_db(server_url, 0),
        "NOTIFIER_DATABASE_URL": db_url,
        "NOTIFIER_ENVIRONMENT": "development",
        "NOTIFIER_GRACE_SECONDS": str(int(FAR)),
        "NOTIFIER_REDIS_EMBEDDED_DIR": str(tmp / "embedded"),
    }
