"""How much does `worker.client.schedule_fallback` cost a host, next to a bare Celery `apply_async`?

    .venv/bin/python -m bench.schedule [--n 20000] [--block 250] [--json PATH] [--profile] [--pin none|same|split]

Starts its own redis-server on a free loopback port (no persistence) and measures, against it, in one run:

  apply_async         a trivial task published by a separate minimal Celery app (nothing consumes it);
  schedule_first      schedule_fallback on a NEW dialog each call (the pending zset member is created);
  schedule_followup   schedule_fallback on dialogs that already have a pending check (coalesced).

Per-call latency is taken with perf_counter_ns around each call, with the GC off, in rounds of `--block`
calls per path whose phase order rotates, so drift (CPU frequency, core placement, Redis memory growth,
neighbours) spreads over all three. The CPU column is this process's CPU time per call: the client-side
cost, without the wait for Redis to answer.

Targets: schedule_first <= 0.5x apply_async and schedule_followup <= 0.4x (checked at p50 and at p99), and
p99 of schedule_fallback < 1 ms. A miss is reported ("TARGET MISSED"), not asserted: exit status 0 either way.

On a small VM a loopback round trip costs ~15 us when the client and redis-server share a vCPU and ~80 us
when the reply has to wake the other vCPU, and the scheduler moves between the two every few seconds;
`--pin same` / `--pin split` fix the placement for comparable runs (default: no pinning, as in production).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._machine import describe, format_machine

FIRST_RATIO_TARGET = 0.5
FOLLOWUP_RATIO_TARGET = 0.4
P99_TARGET_US = 1000.0

FOLLOWUP_BASE = 1  # dialog ids 1..pool: opened during warm-up, coalesced into while timed
FOLLOWUP_POOL = 4000
FIRST_BASE = 10_000_000  # fresh dialog ids for the "first message" phase
WARM_BASE = 90_000_000  # dialog ids used only for warm-up
CELERY_QUEUE = "celery"

PHASES = ("apply_async", "schedule_first", "schedule_followup")


def percentile(sorted_ns: list[int], p: float) -> float:
    """Nearest-rank percentile of an ascending list, in microseconds."""
    if not sorted_ns:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000.0


def summarise(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {
        "n": len(s),
        "p50_us": percentile(s, 50),
        "p90_us": percentile(s, 90),
        "p99_us": percentile(s, 99),
        "p999_us": percentile(s, 99.9),
        "max_us": s[-1] / 1000.0 if s else math.nan,
        "mean_us": (sum(s) / len(s) / 1000.0) if s else math.nan,
    }


def _timed_noargs(fn: Callable[[], Any], count: int) -> tuple[list[int], int]:
    """Per-call wall latencies (ns) and the process CPU time (ns) the loop took."""
    out = [0] * count
    clock = time.perf_counter_ns
    gc.disable()
    try:
        c0 = time.process_time_ns()
        for i in range(count):
            t0 = clock()
            fn()
            out[i] = clock() - t0
        cpu = time.process_time_ns() - c0
    finally:
        gc.enable()
    return out, cpu


def _timed_pairs(fn: Callable[[int, int], Any], pairs: list[tuple[int, int]]) -> tuple[list[int], int]:
    out = [0] * len(pairs)
    clock = time.perf_counter_ns
    gc.disable()
    try:
        c0 = time.process_time_ns()
        for i, (a, b) in enumerate(pairs):
            t0 = clock()
            fn(a, b)
            out[i] = clock() - t0
        cpu = time.process_time_ns() - c0
    finally:
        gc.enable()
    return out, cpu


def _split(n: int, rounds: int) -> list[int]:
    base, extra = divmod(n, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def _pin(mode: str, redis_pid: int) -> dict[str, list[int]] | None:
    """Optionally pin this process and redis-server to CPUs: `same` (one CPU for both) or `split` (two)."""
    if mode == "none":
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "split" and len(cpus) < 2:
        raise SystemExit("--pin split needs two usable CPUs")
    mine, theirs = cpus[0], cpus[0] if mode == "same" else cpus[1]
    os.sched_setaffinity(0, {mine})
    os.sched_setaffinity(redis_pid, {theirs})
    return {"bench": [mine], "redis_server": [theirs]}


def run(n: int, block: int, profile: bool, pin: str = "none") -> dict[str, Any]:
    from tests.support import RedisServer

    rounds = max(1, math.ceil(n / block))
    tmp = Path(tempfile.mkdtemp(prefix="bench-schedule-"))
    server = RedisServer(tmp / "redis", appendonly=False)
    try:
        server.start()
        assert server.proc is not None
        machine = describe(server.url)  # before pinning narrows the usable cores
        pinned = _pin(pin, server.proc.pid)
        data = _run_against(server.url, tmp, n, rounds, profile)
        data["machine"], data["pinned"] = machine, pinned
        return data
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _run_against(url: str, tmp: Path, n: int, rounds: int, profile: bool) -> dict[str, Any]:
    import redis
    from celery import Celery

    from notifier.config import load_settings, set_settings
    from notifier.redis_conn import reset_clients
    from worker import client

    set_settings(load_settings({"NOTIFIER_REDIS_URL": url, "NOTIFIER_DATABASE_URL": f"sqlite:///{tmp}/b.sqlite3"}))
    raw: Any = redis.Redis.from_url(url, socket_timeout=5.0)

    app = Celery("bench", broker=url, set_as_current=False)
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)

    @app.task(name="bench.noop")  # type: ignore[untyped-decorator]
    def noop() -> None:
        pass

    def purge() -> int:
        queued = int(raw.llen(CELERY_QUEUE))
        raw.delete(CELERY_QUEUE)
        return queued

    chunks = _split(n, rounds)
    pool = min(n, FOLLOWUP_POOL)  # follow-up dialogs, coalesced into in turn
    msg = 1_000_000

    # Warm-up: connection pools, SCRIPT LOAD (first EVALSHA -> NOSCRIPT -> EVAL), kombu's producer pool and
    # queue declaration, the interpreter's caches. Also opens the follow-up dialogs' pending checks.
    warm = 2000
    for _ in range(warm):
        noop.apply_async()
    purge()
    for i in range(warm):
        msg += 1
        client.schedule_fallback(WARM_BASE + i, msg)
        msg += 1
        client.schedule_fallback(WARM_BASE + i, msg)
    for d in range(FOLLOWUP_BASE, FOLLOWUP_BASE + pool):
        msg += 1
        client.schedule_fallback(d, msg)
    pending_before = int(raw.zcard("notifier:pending"))

    samples: dict[str, list[int]] = {p: [] for p in PHASES}
    cpu_ns: dict[str, int] = {p: 0 for p in PHASES}
    stats0 = dict(client.stats)
    published = 0
    next_first = FIRST_BASE
    next_follow = 0
    started = time.perf_counter()
    # Rounds of `block` calls per path, phase order rotating each round: the machine's state (CPU frequency,
    # which core Redis and we share, noisy neighbours) changes over tens of ms, so every path sees every state.
    for r, count in enumerate(chunks):
        gc.collect()
        order = PHASES[r % 3 :] + PHASES[: r % 3]
        for phase in order:
            if phase == "apply_async":
                got, cpu = _timed_noargs(noop.apply_async, count)
            elif phase == "schedule_first":
                pairs = []
                for _ in range(count):
                    msg += 1
                    pairs.append((next_first, msg))
                    next_first += 1
                got, cpu = _timed_pairs(client.schedule_fallback, pairs)
            else:
                pairs = []
                for _ in range(count):
                    msg += 1
                    pairs.append((FOLLOWUP_BASE + next_follow, msg))
                    next_follow = (next_follow + 1) % pool
                got, cpu = _timed_pairs(client.schedule_fallback, pairs)
            samples[phase] += got
            cpu_ns[phase] += cpu
        published += purge()
    elapsed = time.perf_counter() - started
    stats1 = dict(client.stats)

    sanity = {
        "published": published,
        "scheduled": stats1["scheduled"] - stats0["scheduled"],
        "coalesced": stats1["coalesced"] - stats0["coalesced"],
        "schedule_failures": stats1["schedule_failures"] - stats0["schedule_failures"],
        "pending_added": int(raw.zcard("notifier:pending")) - pending_before,
    }

    prof_text = None
    if profile:
        prof_text = _profile(client, n, msg + 1)

    purge()
    raw.close()
    reset_clients()
    set_settings(None)
    return {
        "n": n,
        "rounds": rounds,
        "timed_seconds": round(elapsed, 3),
        "results": {p: {**summarise(samples[p]), "cpu_us_per_call": cpu_ns[p] / len(samples[p]) / 1000.0} for p in PHASES},
        "sanity": sanity,
        "profile": prof_text,
    }


def _profile(client: Any, n: int, msg: int) -> str:
    """cProfile over n schedule_fallback calls: half first-message, half coalesced follow-ups."""
    half = max(1, n // 2)
    pairs = [(FIRST_BASE * 2 + i, msg + i) for i in range(half)]
    pairs += [(FIRST_BASE * 2 + i, msg + half + i) for i in range(half)]
    fn = client.schedule_fallback
    prof = cProfile.Profile()
    gc.disable()
    try:
        prof.enable()
        for a, b in pairs:
            fn(a, b)
        prof.disable()
    finally:
        gc.enable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(25)
    st.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


def evaluate(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    base = results["apply_async"]
    first = results["schedule_first"]
    follow = results["schedule_followup"]
    ratios = {
        "first_p50": first["p50_us"] / base["p50_us"],
        "first_p99": first["p99_us"] / base["p99_us"],
        "first_mean": first["mean_us"] / base["mean_us"],
        "followup_p50": follow["p50_us"] / base["p50_us"],
        "followup_p99": follow["p99_us"] / base["p99_us"],
        "followup_mean": follow["mean_us"] / base["mean_us"],
    }
    checks = [
        ("schedule_first p50 <= 0.5x apply_async p50", ratios["first_p50"] <= FIRST_RATIO_TARGET),
        ("schedule_first p99 <= 0.5x apply_async p99", ratios["first_p99"] <= FIRST_RATIO_TARGET),
        ("schedule_followup p50 <= 0.4x apply_async p50", ratios["followup_p50"] <= FOLLOWUP_RATIO_TARGET),
        ("schedule_followup p99 <= 0.4x apply_async p99", ratios["followup_p99"] <= FOLLOWUP_RATIO_TARGET),
        ("schedule_first p99 < 1 ms", first["p99_us"] < P99_TARGET_US),
        ("schedule_followup p99 < 1 ms", follow["p99_us"] < P99_TARGET_US),
    ]
    return {
        "ratios": ratios,
        "checks": [{"target": name, "met": met} for name, met in checks],
        "all_met": all(met for _, met in checks),
    }


def report(data: dict[str, Any], verdict: dict[str, Any]) -> str:
    res = data["results"]
    out = [
        f"schedule_fallback vs Celery apply_async: n={data['n']} per path, {data['rounds']} rounds of "
        f"~{math.ceil(data['n'] / data['rounds'])} calls per path (order rotating), "
        f"timed part {data['timed_seconds']} s"
        + (f", pinned {data['pinned']}" if data.get("pinned") else ""),
        "(CPU µs = this process's CPU time per call, wake-up waits excluded)",
        "",
        f"{'path':<20}{'p50 µs':>10}{'p90 µs':>10}{'p99 µs':>10}{'p99.9 µs':>10}{'max µs':>10}{'mean µs':>10}"
        f"{'CPU µs':>9}",
    ]
    for p in PHASES:
        r = res[p]
        out.append(
            f"{p:<20}{r['p50_us']:>10.1f}{r['p90_us']:>10.1f}{r['p99_us']:>10.1f}{r['p999_us']:>10.1f}"
            f"{r['max_us']:>10.1f}{r['mean_us']:>10.1f}{r['cpu_us_per_call']:>9.1f}"
        )
    ra = verdict["ratios"]
    out += [
        "",
        f"{'ratio to apply_async':<30}{'p50':>8}{'p99':>8}{'mean':>8}{'target':>9}",
        f"{'schedule_first':<30}{ra['first_p50']:>8.2f}{ra['first_p99']:>8.2f}{ra['first_mean']:>8.2f}"
        f"{'<= ' + str(FIRST_RATIO_TARGET):>9}",
        f"{'schedule_followup':<30}{ra['followup_p50']:>8.2f}{ra['followup_p99']:>8.2f}{ra['followup_mean']:>8.2f}"
        f"{'<= ' + str(FOLLOWUP_RATIO_TARGET):>9}",
        "",
        "targets:",
    ]
    for c in verdict["checks"]:
        out.append(f"  [{'met   ' if c['met'] else 'MISSED'}] {c['target']}")
    s = data["sanity"]
    out += [
        "",
        f"sanity: published={s['published']} scheduled={s['scheduled']} coalesced={s['coalesced']} "
        f"failures={s['schedule_failures']} pending_added={s['pending_added']}",
        "",
        "machine:",
        *("  " + line for line in format_machine(data["machine"]).splitlines()),
        "",
        "ALL TARGETS MET" if verdict["all_met"] else "TARGET MISSED",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="timed calls per path (default 20000)")
    parser.add_argument("--block", type=int, default=250, help="calls per path per round (default 250)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--profile", action="store_true", help="also cProfile n schedule_fallback calls")
    parser.add_argument(
        "--pin", choices=("none", "same", "split"), default="none",
        help="pin this process and redis-server to one CPU (same) or two (split); default none",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.block < 1:
        parser.error("--n and --block must be positive")

    data = run(args.n, args.block, args.profile, args.pin)
    verdict = evaluate(data["results"])
    print(report(data, verdict))
    if data["profile"]:
        print("\ncProfile of schedule_fallback:\n" + data["profile"])
    if args.json:
        payload = {k: v for k, v in data.items() if k != "profile"}
        payload.update(verdict)
        payload["targets"] = {
            "first_ratio": FIRST_RATIO_TARGET,
            "followup_ratio": FOLLOWUP_RATIO_TARGET,
            "p99_us": P99_TARGET_US,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
