"""What does a backlog of pending checks cost a worker, next to plain Celery countdown tasks? And how fast does
the dispatcher move due checks to Celery?

    .venv/bin/python -m bench.pending [--n 100000] [--json PATH]

One run, against a private redis-server (no persistence) on a free loopback port and a temporary SQLite DB:

  A. our design: a real worker (`celery -A worker worker -P solo -Q notifier`, no beat, grace 1 day so
     nothing falls due). Its resident memory (VmRSS of the process and its children) is read when idle,
     then N pending checks are scheduled (the schedule_fallback Lua script, pipelined) and it is read again.
     Redis memory taken by our keys is reported too.
  B. baseline: a minimal Celery app (bench/_countdown_app.py) and its worker (-P solo) on Redis DB 1;
     N `noop.apply_async(countdown=86400)` are published, and the worker's RSS is read once it has taken
     them all off the queue (they sit in its memory, unacked, until their ETA).
  C. dispatcher: with A's worker stopped, N checks already due are moved by `notifier.check.dispatch` to
     Celery (`check_dialogs.apply_async` in chunks of 50, queue `notifier`, nobody consuming); then the
     queue is decoded to verify every dialog went out exactly once.

Targets: our worker grows < 30 MB with N pending; dispatch moves >= 5,000 checks/s. A miss is reported
("MISSED"), not asserted: exit status 0 either way.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._machine import describe, format_machine
from tests.procs import WorkerProc, worker_env
from tests.support import RedisServer, free_port

GROWTH_TARGET_MB = 30.0
RATE_TARGET = 5000.0
NOISE_FLOOR_MB = 1.0  # for the growth ratio when our worker's growth is ~0

FAR = 86400.0  # grace (A) and countdown (B): nothing falls due during the run
SCHEDULE_BATCH = 1000  # Lua calls per pipeline
SETTLE_S = 2.0  # idle worker before its first RSS reading
AFTER_S = 3.0  # wait after scheduling before the second reading
INGEST_TIMEOUT_S = 120.0  # for the baseline worker to take every countdown task off the queue
READY_TIMEOUT_S = 60.0

A_BASE = 1_000_000  # dialog ids for A
C_BASE = 5_000_000  # dialog ids for C
MSG_BASE = 10_000_000

OUR_QUEUE = "notifier"
BASELINE_QUEUE = "celery"
KOMBU_UNACKED = "unacked"  # kombu's Redis transport: messages delivered to a consumer, not yet acked
KOMBU_UNACKED_INDEX = "unacked_index"


# ---------------------------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                out += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            pass
    return out


def process_tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def _vmrss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mb(pid: int) -> float:
    """VmRSS summed over the process and all its descendants, in MiB."""
    return sum(_vmrss_kb(p) for p in process_tree(pid)) / 1024.0


def wait_ready(worker: WorkerProc, broker: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Seconds from spawn until the worker answers a control ping."""
    from celery import Celery

    app = Celery("bench-ping", broker=broker, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} worker exited early:\n{worker.tail(20)}")
            if app.control.ping(timeout=0.5):
                return time.time() - (worker.started_at or 0.0)
        raise RuntimeError(f"{worker.name} worker not ready after {timeout:.0f} s:\n{worker.tail(20)}")
    finally:
        app.close()


# ---------------------------------------------------------------------------------------------- helpers


def used_memory(r: Any) -> int:
    return int(r.info("memory")["used_memory"])


def key_bytes(r: Any, keys: list[str]) -> int:
    """MEMORY USAGE of whole keys (SAMPLES 0: every element counted)."""
    total = 0
    for k in keys:
        got = r.memory_usage(k, samples=0)
        total += int(got or 0)
    return total


def schedule_pipelined(r: Any, ids: range, seen_at: float, grace: float) -> float:
    """The schedule_fallback Lua script (what Store.schedule runs), SCHEDULE_BATCH calls per round trip.

    Returns seconds taken.
    """
    from notifier.store import SCHEDULE_LUA, schedule_args, schedule_keys

    script = r.register_script(SCHEDULE_LUA)
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, dialog_id in enumerate(ids, 1):
        args = schedule_args(dialog_id, MSG_BASE + dialog_id, seen_at, grace)
        script(keys=schedule_keys(dialog_id), args=args, client=pipe)
        if i % SCHEDULE_BATCH == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - t0


def _mb(b: float) -> float:
    return b / 2**20


# ---------------------------------------------------------------------------------------------- A


def measure_ours(worker: WorkerProc, url: str, n: int) -> dict[str, Any]:
    import redis

    from notifier.store import PENDING, SEEN_PREFIX

    r: Any = redis.Redis.from_url(url, socket_timeout=10.0, decode_responses=True)
    try:
        wait_ready(worker, url)  # still answering (one ping) before the idle reading
        time.sleep(SETTLE_S)
        rss0 = rss_mb(worker.pid)
        mem0 = used_memory(r)
        took = schedule_pipelined(r, range(A_BASE, A_BASE + n), time.time(), FAR)
        pending = int(r.zcard(PENDING))
        time.sleep(AFTER_S)
        if not worker.alive():
            raise RuntimeError(f"our worker died:\n{worker.tail(20)}")
        rss1 = rss_mb(worker.pid)
        mem1 = used_memory(r)
        ours = key_bytes(r, [PENDING, *r.scan_iter(SEEN_PREFIX + "*", count=1000)])
        return {
            "rss_before_mb": round(rss0, 1),
            "rss_after_mb": round(rss1, 1),
            "growth_mb": round(rss1 - rss0, 2),
            "scheduled": n,
            "pending_zcard": pending,
            "schedule_seconds": round(took, 3),
            "schedule_rate_per_s": round(n / took, 0),
            "redis_used_memory_before_mb": round(_mb(mem0), 2),
            "redis_used_memory_after_mb": round(_mb(mem1), 2),
            "redis_used_memory_growth_mb": round(_mb(mem1 - mem0), 2),
            "redis_our_keys_mb": round(_mb(ours), 2),
            "redis_bytes_per_pending": round((mem1 - mem0) / n, 1),
        }
    finally:
        r.close()


# ---------------------------------------------------------------------------------------------- B


def measure_baseline(worker: WorkerProc, url: str, n: int) -> dict[str, Any]:
    import redis

    os.environ["BENCH_BROKER"] = url
    from bench import _countdown_app

    r: Any = redis.Redis.from_url(url, socket_timeout=10.0)
    try:
        wait_ready(worker, url)  # still answering (one ping) before the idle reading
        time.sleep(SETTLE_S)
        rss0 = rss_mb(worker.pid)
        mem0 = used_memory(r)
        noop = _countdown_app.noop
        t0 = time.perf_counter()
        for _ in range(n):
            noop.apply_async(countdown=FAR)
        publish_s = time.perf_counter() - t0
        deadline = time.monotonic() + INGEST_TIMEOUT_S
        peak = rss_mb(worker.pid)
        queued = held = 0
        while True:
            queued, held = int(r.llen(BASELINE_QUEUE)), int(r.hlen(KOMBU_UNACKED))
            peak = max(peak, rss_mb(worker.pid))
            if (queued == 0 and held >= n) or time.monotonic() >= deadline or not worker.alive():
                break
            time.sleep(0.25)
        ingest_s = time.perf_counter() - t0
        in_time = queued == 0 and held >= n
        held_at_deadline, queued_at_deadline = held, queued
        if not worker.alive():
            raise RuntimeError(f"baseline worker died:\n{worker.tail(20)}")
        time.sleep(SETTLE_S)
        rss1 = rss_mb(worker.pid)
        held = int(r.hlen(KOMBU_UNACKED))  # at the RSS reading (it may have taken more while we waited)
        queued = int(r.llen(BASELINE_QUEUE))
        complete = queued == 0 and held >= n
        mem1 = used_memory(r)
        kombu = key_bytes(r, [KOMBU_UNACKED, KOMBU_UNACKED_INDEX, BASELINE_QUEUE])
        growth = rss1 - rss0
        per_task_kb = growth * 1024.0 / held if held else math.nan
        out: dict[str, Any] = {
            "rss_before_mb": round(rss0, 1),
            "rss_after_mb": round(rss1, 1),
            "rss_peak_mb": round(max(peak, rss1), 1),
            "growth_mb": round(growth, 2),
            "published": n,
            "publish_seconds": round(publish_s, 3),
            "publish_rate_per_s": round(n / publish_s, 0),
            "complete": complete,
            "all_taken_within_timeout": in_time,
            "held_unacked_at_timeout": held_at_deadline,
            "queued_at_timeout": queued_at_deadline,
            "held_unacked": held,
            "still_queued": queued,
            "ingest_seconds_from_first_publish": round(ingest_s, 2),
            "ingest_timeout_s": INGEST_TIMEOUT_S,
            "growth_kb_per_task": round(per_task_kb, 2),
            "redis_used_memory_before_mb": round(_mb(mem0), 2),
            "redis_used_memory_after_mb": round(_mb(mem1), 2),
            "redis_used_memory_growth_mb": round(_mb(mem1 - mem0), 2),
            "redis_kombu_keys_mb": round(_mb(kombu), 2),
        }
        if not complete and held:
            out["growth_mb_extrapolated_to_n"] = round(per_task_kb * n / 1024.0, 1)
        return out
    finally:
        r.close()


# ---------------------------------------------------------------------------------------------- C


def decode_queue(r: Any, queue: str) -> tuple[int, list[list[int]], list[str]]:
    """Messages in a kombu Redis list: (count, args[0] of each, task names)."""
    raw = r.lrange(queue, 0, -1)
    chunks: list[list[int]] = []
    names: list[str] = []
    for item in raw:
        env = json.loads(item)
        body = env["body"]
        if env.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        chunks.append([int(x) for x in args[0]])
        names.append(str(env.get("headers", {}).get("task")))
    return len(raw), chunks, names


def measure_dispatch(url: str, db_url: str, tmp: Path, n: int) -> dict[str, Any]:
    from notifier.check import CHECK_CHUNK, dispatch
    from notifier.config import load_settings, set_settings
    from notifier.db import dispose_all
    from notifier.redis_conn import reset_clients
    from notifier.runtime import build_runtime
    from notifier.store import INFLIGHT, PENDING, Dispatched

    settings = load_settings({
        "NOTIFIER_REDIS_URL": url,
        "NOTIFIER_DATABASE_URL": db_url,
        "NOTIFIER_ENVIRONMENT": "development",
        "NOTIFIER_REDIS_EMBEDDED_DIR": str(tmp / "embedded"),
    })
    set_settings(settings)  # worker.celery_app reads its broker from here, on first use
    reset_clients()
    rt = build_runtime(settings)
    r: Any = rt.store.r
    try:
        grace = settings.grace_seconds
        ids = range(C_BASE, C_BASE + n)
        schedule_pipelined(r, ids, time.time() - grace - 3600.0, grace)  # all due an hour ago
        assert int(r.zcard(PENDING)) == n, "scheduling the due checks failed"

        from worker.tasks import check_dialogs

        timers = {"lua": 0.0, "publish": 0.0, "lua_calls": 0, "messages": 0, "deliveries": 0}
        real_dispatch = rt.store.dispatch

        def timed_dispatch(now: float, limit: int, lease: float, max_attempts: int) -> Dispatched:
            t = time.perf_counter()
            try:
                return real_dispatch(now, limit, lease, max_attempts)
            finally:
                timers["lua"] += time.perf_counter() - t
                timers["lua_calls"] += 1

        def enqueue_checks(chunk: list[int]) -> None:
            t = time.perf_counter()
            check_dialogs.apply_async((chunk,))
            timers["publish"] += time.perf_counter() - t
            timers["messages"] += 1

        def enqueue_delivery(_delivery_id: int) -> None:
            timers["deliveries"] += 1

        rt.store.dispatch = timed_dispatch  # type: ignore[method-assign]
        moved = calls = 0
        t0 = time.perf_counter()
        now = time.time()
        while moved < n:
            got = dispatch(rt, enqueue_checks, enqueue_delivery, now)
            calls += 1
            moved += got
            if got == 0:
                break
        total = time.perf_counter() - t0
        rt.store.dispatch = real_dispatch  # type: ignore[method-assign]

        pending, inflight = int(r.zcard(PENDING)), int(r.zcard(INFLIGHT))
        count, chunks, names = decode_queue(r, OUR_QUEUE)
        flat = [d for c in chunks for d in c]
        expect_msgs = math.ceil(n / CHECK_CHUNK)
        verify = {
            "pending_empty": pending == 0,
            "inflight_holds_n": inflight == n,
            "queue_messages": count,
            "queue_messages_expected": expect_msgs,
            "queue_count_ok": count == expect_msgs,
            "ids_in_queue": len(flat),
            "no_duplicates": len(flat) == len(set(flat)),
            "ids_exactly_n": set(flat) == set(ids),
            "largest_chunk": max((len(c) for c in chunks), default=0),
            "all_check_dialogs": all(x == "notifier.check_dialogs" for x in names),
        }
        verify["all_ok"] = all(v for k, v in verify.items() if isinstance(v, bool))
        other = total - timers["lua"] - timers["publish"]
        return {
            "moved": moved,
            "dispatch_calls": calls,
            "seconds": round(total, 3),
            "rate_per_s": round(moved / total, 0) if total > 0 else math.nan,
            "lua_seconds": round(timers["lua"], 3),
            "lua_calls": timers["lua_calls"],
            "lua_rate_per_s": round(moved / timers["lua"], 0) if timers["lua"] > 0 else math.nan,
            "publish_seconds": round(timers["publish"], 3),
            "publish_messages": timers["messages"],
            "publish_us_per_message": round(timers["publish"] / max(1, timers["messages"]) * 1e6, 1),
            "other_seconds": round(other, 3),
            "deliveries_requeued": timers["deliveries"],
            "verify": verify,
        }
    finally:
        from worker.celery_app import app

        app.close()
        reset_clients()
        dispose_all()
        set_settings(None)


# ---------------------------------------------------------------------------------------------- run


def run(n: int) -> dict[str, Any]:
    import redis

    from notifier import host
    from notifier.db import create
    from notifier.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="bench-pending-"))
    server = RedisServer(tmp / "redis", appendonly=False)
    workers: list[WorkerProc] = []
    started = time.perf_counter()
    load0 = os.getloadavg()
    try:
        server.start()
        ours_url = f"redis://127.0.0.1:{server.port}/0"
        base_url = f"redis://127.0.0.1:{server.port}/1"
        machine = describe(ours_url)

        db_url = f"sqlite:///{tmp}/notifier.sqlite3"
        engine = create(db_url)
        host.host_metadata.create_all(engine)
        upgrade(engine)
        engine.dispose()

        # Quiet (-l warning): the reading is the worker's memory, not its log lines.
        ours_env = worker_env(db_url, ours_url, free_port(), tmp, NOTIFIER_GRACE_SECONDS=str(int(FAR)))
        ours_w = WorkerProc(tmp, ours_env, name="our", loglevel="warning", quiet=True)
        workers.append(ours_w)
        base_w = WorkerProc(tmp, {"BENCH_BROKER": base_url}, name="baseline", loglevel="warning", quiet=True,
                            queues=BASELINE_QUEUE, app="bench._countdown_app")
        workers.append(base_w)
        # Both start now (start-up overlaps); the baseline idles on DB 1 while A is measured.
        ours_w.start(wait_ready=False)
        base_w.start(wait_ready=False)

        ready = {"ours": wait_ready(ours_w, ours_url), "baseline": wait_ready(base_w, base_url)}
        a = measure_ours(ours_w, ours_url, n)
        ours_w.stop()
        r0 = redis.Redis.from_url(ours_url)
        r0.flushdb()  # A's pending checks and kombu bindings; C starts from an empty DB 0
        r0.close()

        b = measure_baseline(base_w, base_url, n)
        base_w.stop(timeout=3.0)  # warm shutdown would restore N unacked messages; not worth the wait

        c = measure_dispatch(ours_url, db_url, tmp, n)
        a["ready_s"], b["ready_s"] = round(ready["ours"], 2), round(ready["baseline"], 2)
        return {"n": n, "machine": machine, "ours": a, "baseline": b, "dispatch": c,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "loadavg_1m_start_end": [round(load0[0], 2), round(os.getloadavg()[0], 2)]}
    finally:
        for w in workers:
            try:
                w.stop(timeout=3.0)
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        server.stop(kill=True)
        shutil.rmtree(tmp, ignore_errors=True)


def evaluate(data: dict[str, Any]) -> dict[str, Any]:
    a, b, c = data["ours"], data["baseline"], data["dispatch"]
    ours_growth = a["growth_mb"]
    base_growth = b.get("growth_mb_extrapolated_to_n", b["growth_mb"])
    ratio = base_growth / ours_growth if ours_growth > 0.05 else math.inf
    # Ours usually grows by 0 KB, which makes the ratio unbounded; also give it against a 1 MB noise floor.
    floored = base_growth / max(ours_growth, NOISE_FLOOR_MB)
    checks = [
        (f"our worker grows < {GROWTH_TARGET_MB:g} MB with {data['n']:,} pending", ours_growth < GROWTH_TARGET_MB),
        (f"dispatch >= {RATE_TARGET:,.0f} checks/s", c["rate_per_s"] >= RATE_TARGET),
        ("dispatch verification (pending empty, inflight = N, queue = ceil(N/CHECK_CHUNK), ids exact)", c["verify"]["all_ok"]),
    ]
    return {
        "growth_ratio_baseline_to_ours": ratio if math.isfinite(ratio) else None,
        "growth_ratio_vs_1mb_floor": round(floored, 1),
        "checks": [{"target": t, "met": m} for t, m in checks],
        "all_met": all(m for _, m in checks),
    }


def _yes(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(data: dict[str, Any], verdict: dict[str, Any]) -> str:
    n, a, b, c = data["n"], data["ours"], data["baseline"], data["dispatch"]
    out = [
        f"pending backlog: N = {n:,} (whole run {data['wall_seconds']} s; 1-min load average at start/end "
        f"{data['loadavg_1m_start_end'][0]}/{data['loadavg_1m_start_end'][1]})",
        "",
        "machine:",
        *("  " + line for line in format_machine(data["machine"]).splitlines()),
        "",
        f"A. our worker (celery -A worker worker -P solo -Q notifier), {n:,} pending checks in Redis",
        f"   ready after {a['ready_s']} s; scheduled {n:,} in {a['schedule_seconds']} s "
        f"({a['schedule_rate_per_s']:,.0f}/s, Lua pipelined x{SCHEDULE_BATCH}); pending zset = {a['pending_zcard']:,}",
        f"   worker RSS  before {a['rss_before_mb']:.1f} MB   after {a['rss_after_mb']:.1f} MB   "
        f"growth {a['growth_mb']:+.2f} MB",
        f"   Redis used_memory {a['redis_used_memory_before_mb']:.1f} -> {a['redis_used_memory_after_mb']:.1f} MB "
        f"(+{a['redis_used_memory_growth_mb']:.1f} MB, {a['redis_bytes_per_pending']:.0f} B/pending); "
        f"MEMORY USAGE of notifier:pending and notifier:seen:* = {a['redis_our_keys_mb']:.1f} MB",
        "",
        f"B. baseline Celery worker (-P solo, default settings), {n:,} noop.apply_async(countdown={int(FAR)})",
        f"   ready after {b['ready_s']} s; published {n:,} in {b['publish_seconds']} s ({b['publish_rate_per_s']:,.0f}/s)",
    ]
    if b["all_taken_within_timeout"]:
        out.append(f"   worker took all {b['held_unacked']:,} off the queue {b['ingest_seconds_from_first_publish']} s "
                   f"after the first publish ({n / b['ingest_seconds_from_first_publish']:,.0f}/s)")
    else:
        out.append(f"   TIMEOUT: {b['ingest_timeout_s']:.0f} s after publishing ended the worker held "
                   f"{b['held_unacked_at_timeout']:,} (still queued {b['queued_at_timeout']:,}); "
                   f"at the RSS reading {SETTLE_S:g} s later: held {b['held_unacked']:,}, queued {b['still_queued']:,}")
    out += [
        f"   worker RSS  before {b['rss_before_mb']:.1f} MB   after {b['rss_after_mb']:.1f} MB   "
        f"growth {b['growth_mb']:+.2f} MB ({b['growth_kb_per_task']:.2f} KB/task; peak {b['rss_peak_mb']:.1f} MB)",
    ]
    if "growth_mb_extrapolated_to_n" in b:
        out.append(f"   EXTRAPOLATED to {n:,} tasks: growth ~{b['growth_mb_extrapolated_to_n']:.0f} MB "
                   f"(measured {b['growth_mb']:.1f} MB for {b['held_unacked']:,})")
    out += [
        f"   Redis used_memory {b['redis_used_memory_before_mb']:.1f} -> {b['redis_used_memory_after_mb']:.1f} MB "
        f"(+{b['redis_used_memory_growth_mb']:.1f} MB); MEMORY USAGE of unacked/unacked_index/celery = "
        f"{b['redis_kombu_keys_mb']:.1f} MB",
        "",
    ]
    ratio = verdict["growth_ratio_baseline_to_ours"]
    base_growth = b.get("growth_mb_extrapolated_to_n", b["growth_mb"])
    out.append(
        f"worker growth, baseline / ours: {ratio:,.0f}x ({base_growth:+.1f} MB vs {a['growth_mb']:+.2f} MB)"
        if ratio is not None
        else f"worker growth, baseline / ours: unbounded ({base_growth:+.1f} MB vs {a['growth_mb']:+.2f} MB); "
        f"with ours floored at {NOISE_FLOOR_MB:g} MB: >= {verdict['growth_ratio_vs_1mb_floor']:,.0f}x"
    )
    v = c["verify"]
    out += [
        "",
        f"C. dispatcher: notifier.check.dispatch moving {n:,} due checks to Celery (queue {OUR_QUEUE}, no consumer)",
        f"   moved {c['moved']:,} in {c['seconds']} s over {c['dispatch_calls']} dispatch() call(s): "
        f"{c['rate_per_s']:,.0f} checks/s",
        f"   Lua dispatch {c['lua_seconds']} s ({c['lua_calls']} calls, {c['lua_rate_per_s']:,.0f} checks/s alone); "
        f"publish {c['publish_seconds']} s ({c['publish_messages']:,} messages, {c['publish_us_per_message']} µs each); "
        f"other {c['other_seconds']} s",
        f"   verify: pending empty {v['pending_empty']}, inflight = N {v['inflight_holds_n']}, "
        f"queue {v['queue_messages']:,} messages (expected {v['queue_messages_expected']:,}), "
        f"{v['ids_in_queue']:,} ids, no duplicates {v['no_duplicates']}, exactly the N ids {v['ids_exactly_n']}, "
        f"largest chunk {v['largest_chunk']}, all notifier.check_dialogs {v['all_check_dialogs']}",
        "",
        "targets:",
    ]
    for chk in verdict["checks"]:
        out.append(f"  [{_yes(chk['met']):<6}] {chk['target']}")
    out += ["", "ALL TARGETS MET" if verdict["all_met"] else "TARGET MISSED"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pending", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="pending dialogs / countdown tasks (default 100000)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be positive")
    data = run(args.n)
    verdict = evaluate(data)
    print(report(data, verdict))
    if args.json:
        payload = {**data, **verdict, "targets": {"growth_mb": GROWTH_TARGET_MB, "checks_per_s": RATE_TARGET}}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
