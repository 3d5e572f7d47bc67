"""What does a growing backlog cost? Schedule, dispatch, worker memory, Redis memory and the reconciler,
with 1,000, 10,000 and 100,000 pending dialogs and 1,000,000 host messages.

    .venv/bin/python -m bench.scale [--sizes 1000,10000,100000] [--messages 1000000] [--calls 6000]
                                    [--postgres URL] [--json PATH]

One run, against a private redis-server (no persistence) on a free loopback port, a temporary SQLite
database for the worker, and a database `bench_scale` created (and dropped) on the PostgreSQL of
`--postgres` (default: the local server, trust auth). For each backlog size N:

  Redis      N pending dialogs, one message each, written by the schedule script: MEMORY USAGE (SAMPLES 0)
             of our keys / N, and INFO used_memory growth / N. Baseline: the same backlog in the previous
             layout (a field in the `seen` and `latest` hashes per dialog), same server.
  worker     `notifier worker` itself (a control worker with embedded beat, a sending worker, prefork
             pools), started on the backlog: resident memory of its whole process tree once idle.
             Baseline: the same deployment started on no backlog at all.
  schedule   `worker.client.schedule_fallback` with the backlog in Redis: a new dialog (first message) and
             a message to one of the N pending dialogs (coalesced), p50/p99 per call. Baseline: a bare
             Celery `apply_async` of a no-op task to the same server, in the same rotating rounds.
  dispatch   N due checks moved to Celery by `notifier.check.dispatch`: checks per second (median of
             several runs for small N). Baseline: publishing the same chunk messages with no Redis pop.

Then the reconciler (notifier/reconcile.py) on ReplyX's schema and production indexes: its scan statement,
its first-id search and a whole run, with only the lookback window's messages in the table, then with
`--messages` rows; the statement's EXPLAIN (ANALYZE, BUFFERS). Baselines: the window-only table, and the
same statement with index scans forbidden.

Every per-item figure is compared with the smallest N (per call, per check, per dialog; worker memory as
a whole, since it must not grow at all). Targets: the largest N costs at most 1.5x the smallest per item;
under 200 bytes of Redis per pending dialog; the reconciler's scan stays on the primary-key index. A miss
is reported ("MISSED"), not asserted: exit status 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._machine import describe, format_machine
from bench._scale_phases import (
    Caller,
    DispatchRate,
    RedisBytes,
    ScheduleCost,
    WorkerMemory,
    measure_dispatch,
    measure_redis_bytes,
    measure_schedule,
    measure_worker,
    redis_db,
    worker_env,
)
from bench._scale_reconcile import ReconcileResult, ReconcileStage, measure_reconciler

SIZES = (1_000, 10_000, 100_000)
MESSAGES = 1_000_000
SCALE_TARGET = 1.5  # largest N per item / smallest N per item
BYTES_TARGET = 200.0
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "bench_scale"


@dataclass(frozen=True)
class SizeResult:
    n: int
    redis: RedisBytes
    worker: WorkerMemory
    schedule: ScheduleCost
    dispatch: DispatchRate


@dataclass(frozen=True)
class Check:
    target: str
    met: bool


@dataclass(frozen=True)
class Run:
    machine: dict[str, Any]
    loadavg_start_end: tuple[float, float]  # 1-minute load average: the machine may be shared
    idle_worker: WorkerMemory  # no backlog: the worker-memory baseline
    sizes: tuple[SizeResult, ...]
    reconciler: ReconcileResult | None
    reconciler_error: str | None
    wall_seconds: float


# ---------------------------------------------------------------------------------------------- running


class Bench:
    """The private services of one run: a redis-server per backlog size (so the schedule phase can visit
    every size in turn), one more for the dispatcher, the idle worker and the reconciler."""

    def __init__(self, tmp: Path, sizes: tuple[int, ...], calls: int) -> None:
        from tests.support import RedisServer

        self.tmp = tmp
        self.sizes = sizes
        self.calls = calls
        self.main = RedisServer(tmp / "redis-main", appendonly=False)
        self.servers = {n: RedisServer(tmp / f"redis-{n}", appendonly=False) for n in sizes}
        self.db_url = f"sqlite:///{tmp}/notifier.sqlite3"

    def __enter__(self) -> Bench:
        from notifier import host
        from notifier.db import create
        from notifier.migrate import upgrade
        from notifier.redis_conn import reset_clients
        from notifier.runtime import build_runtime

        for server in (self.main, *self.servers.values()):
            server.start()
        engine = create(self.db_url)
        host.host_metadata.create_all(engine)
        upgrade(engine)
        engine.dispose()
        self.main_settings = self.settings_for(self.main.url)
        self.callers = [
            Caller(n, server.url, self.settings_for(server.url), baseline_task(redis_db(server.url, 1)))
            for n, server in self.servers.items()
        ]
        # This process as a beat would have it; worker.celery_app reads its broker from here on first use.
        self.use_main()
        reset_clients()
        self.rt = build_runtime()
        from worker.tasks import check_dialogs

        self.check_task = check_dialogs
        return self

    def __exit__(self, *_: object) -> None:
        from notifier.config import set_settings
        from notifier.db import dispose_all
        from notifier.redis_conn import reset_clients
        from worker.celery_app import app

        app.close()
        for caller in self.callers:
            caller.noop.app.close()
        reset_clients()
        dispose_all()
        set_settings(None)
        for server in (self.main, *self.servers.values()):
            server.stop(kill=True)

    def settings_for(self, server_url: str) -> Any:
        from notifier.config import load_settings

        env = worker_env(server_url, self.db_url, self.tmp)
        return load_settings({k: v for k, v in env.items() if k.startswith("NOTIFIER_")})

    def use_main(self) -> None:
        from notifier.config import set_settings

        set_settings(self.main_settings)

    def idle_worker(self) -> WorkerMemory:
        env = worker_env(self.main.url, self.db_url, self.tmp)
        return measure_worker(self.main.url, env, self.tmp / "worker-idle.log", 0)

    def backlog(self, n: int) -> tuple[RedisBytes, WorkerMemory]:
        """N pending dialogs in their server (left there for the schedule phase), and a worker on them."""
        url = self.servers[n].url
        redis_bytes = measure_redis_bytes(url, n)
        worker = measure_worker(url, worker_env(url, self.db_url, self.tmp), self.tmp / f"worker-{n}.log", n)
        return redis_bytes, worker

    def schedule(self) -> dict[int, ScheduleCost]:
        try:
            measure_schedule(self.callers, self.calls)
        finally:
            self.use_main()
        return {c.n: c.result() for c in self.callers}

    def dispatch(self, n: int) -> DispatchRate:
        return measure_dispatch(self.rt, self.check_task, n)


def baseline_task(broker: str) -> Any:
    """A bare Celery app's no-op task: what publishing one task costs with default settings."""
    from celery import Celery

    app = Celery("bench-scale-baseline", broker=broker, set_as_current=False)
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)

    @app.task(name="bench.noop")  # type: ignore[untyped-decorator]
    def noop() -> None:
        return None

    return noop


def run(sizes: tuple[int, ...], messages: int, calls: int, postgres: str | None) -> Run:
    started = time.perf_counter()
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with Bench(tmp, sizes, calls) as bench:
            machine = describe(bench.main.url)
            progress("idle worker, no backlog")
            idle = bench.idle_worker()
            backlogs = {}
            for n in sizes:
                progress(f"N = {n:,}: Redis bytes, worker memory")
                backlogs[n] = bench.backlog(n)
            progress(f"schedule_fallback, every N in turn, {calls:,} calls per path and N")
            schedule = bench.schedule()
            dispatch = {}
            for n in sizes:
                progress(f"N = {n:,}: dispatcher")
                dispatch[n] = bench.dispatch(n)
            reconciler, error = None, None
            if postgres and messages:
                progress(f"reconciler, {messages:,} host messages in PostgreSQL")
                try:
                    reconciler = measure_reconciler(postgres, PG_DATABASE, redis_db(bench.main.url, 3), messages)
                except Exception as exc:  # noqa: BLE001 - the Redis figures still stand; say why this one is missing
                    error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        results = tuple(SizeResult(n, *backlogs[n], schedule[n], dispatch[n]) for n in sizes)
        load = (round(load0, 2), round(os.getloadavg()[0], 2))
        return Run(machine, load, idle, results, reconciler, error, round(time.perf_counter() - started, 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- judging


def evaluate(run_: Run) -> list[Check]:
    small, large = run_.sizes[0], run_.sizes[-1]
    scale = f"N={large.n:,} vs N={small.n:,}"
    checks = [
        Check(f"schedule_fallback (first message) p50 per call, {scale} <= {SCALE_TARGET}x",
              large.schedule.first.p50_us <= SCALE_TARGET * small.schedule.first.p50_us),
        Check(f"schedule_fallback (coalesced) p50 per call, {scale} <= {SCALE_TARGET}x",
              large.schedule.followup.p50_us <= SCALE_TARGET * small.schedule.followup.p50_us),
        Check(f"dispatch µs per check, {scale} <= {SCALE_TARGET}x",
              large.dispatch.us_per_check <= SCALE_TARGET * small.dispatch.us_per_check),
        Check("dispatch verified (pending empty, N in flight, ceil(N/CHECK_CHUNK) queue messages) at every N",
              all(s.dispatch.verified for s in run_.sizes)),
        Check(f"worker RSS, {scale} <= {SCALE_TARGET}x", large.worker.rss_mb <= SCALE_TARGET * small.worker.rss_mb),
        Check(f"Redis bytes per pending dialog, {scale} <= {SCALE_TARGET}x",
              large.redis.per_dialog <= SCALE_TARGET * small.redis.per_dialog),
        *(Check(f"Redis < {BYTES_TARGET:g} B per pending dialog at N={s.n:,} (MEMORY USAGE / N)",
                s.redis.per_dialog < BYTES_TARGET) for s in run_.sizes),
        Check(f"Redis < {BYTES_TARGET:g} B per pending dialog at N={large.n:,} (used_memory growth / N)",
              large.redis.used_memory_per_dialog < BYTES_TARGET),
        Check(f"Redis < {BYTES_TARGET:g} B per pending dialog at N={large.n:,} with the burst mix",
              large.redis.mixed_per_dialog < BYTES_TARGET),
    ]  # fmt: skip
    rec = run_.reconciler
    if rec is None:
        checks.append(Check("reconciler measured on PostgreSQL", False))
    else:
        checks.append(Check(f"reconciler scan on dialog_messages_pkey, no Seq Scan on dialog_messages, "
                            f"{rec.large.messages:,} messages", rec.large.plan.on_index))  # fmt: skip
        checks.append(Check(f"reconciler scan, {rec.large.messages:,} vs {rec.small.messages:,} messages "
                            f"<= {SCALE_TARGET}x", rec.large.scan_ms <= SCALE_TARGET * rec.small.scan_ms))  # fmt: skip
    return checks


# ---------------------------------------------------------------------------------------------- reporting


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report_schedule(sizes: tuple[SizeResult, ...]) -> list[str]:
    small = sizes[0].schedule
    out = [
        "schedule_fallback, µs per call, N pending in Redis (baseline: bare Celery apply_async, same rounds)",
        f"  {'N':>8} {'path':<12}{'calls':>7}{'p50':>8}{'p99':>8}{'vs apply_async p50/p99':>24}"
        f"{'per call vs N=' + format(sizes[0].n, ','):>24}",
    ]
    for s in sizes:
        c = s.schedule
        for name, lat, ref in (("apply_async", c.apply_async, small.apply_async), ("first", c.first, small.first),
                               ("coalesced", c.followup, small.followup)):  # fmt: skip
            base = c.apply_async
            vs = "baseline" if name == "apply_async" else f"{_x(lat.p50_us, base.p50_us)} / {_x(lat.p99_us, base.p99_us)}"
            out.append(f"  {s.n:>8,} {name:<12}{lat.calls:>7,}{lat.p50_us:>8.1f}{lat.p99_us:>8.1f}{vs:>24}"
                       f"{_x(lat.p50_us, ref.p50_us) + ' p50, ' + _x(lat.p99_us, ref.p99_us) + ' p99':>24}")  # fmt: skip
    return out


def report_dispatch(sizes: tuple[SizeResult, ...]) -> list[str]:
    small = sizes[0].dispatch
    out = [
        "dispatcher: due checks moved to Celery by notifier.check.dispatch (baseline: publishing the same chunks alone)",
        f"  {'N':>8}{'runs':>6}{'checks/s':>11}{'µs/check':>10}{'publish-only/s':>16}{'vs publish-only':>17}"
        f"{'µs/check vs N=' + format(sizes[0].n, ','):>22}{'verified':>10}",
    ]
    for s in sizes:
        d = s.dispatch
        out.append(f"  {d.n:>8,}{d.runs:>6}{d.rate_per_s:>11,.0f}{d.us_per_check:>10.2f}{d.publish_only_per_s:>16,.0f}"
                   f"{_x(d.rate_per_s, d.publish_only_per_s):>17}{_x(d.us_per_check, small.us_per_check):>22}"
                   f"{'yes' if d.verified else 'NO':>10}")  # fmt: skip
    return out


def report_worker(idle: WorkerMemory, sizes: tuple[SizeResult, ...]) -> list[str]:
    out = [
        "worker memory: RSS of the whole process tree of `notifier worker` (supervisor; control worker, prefork,",
        "  with beat; sending worker, prefork), idle with N pending",
        f"  {'N':>8}{'RSS MB':>9}{'processes':>11}{'readings':>22}{'vs no backlog':>15}{'vs N=' + format(sizes[0].n, ','):>12}",
        f"  {0:>8,}{idle.rss_mb:>9.1f}{idle.processes:>11}{str(idle.readings_mb):>22}{'baseline':>15}{'':>12}",
    ]
    for s in sizes:
        w = s.worker
        out.append(f"  {w.n:>8,}{w.rss_mb:>9.1f}{w.processes:>11}{str(w.readings_mb):>22}"
                   f"{w.rss_mb - idle.rss_mb:>+13.1f}MB{_x(w.rss_mb, sizes[0].worker.rss_mb):>12}")  # fmt: skip
    return out


def report_redis(sizes: tuple[SizeResult, ...]) -> list[str]:
    out = [
        "Redis bytes per pending dialog (MEMORY USAGE of our keys / N; baseline: the previous layout, same backlog)",
        f"  {'N':>8}{'B/dialog':>10}{'used_memory/N':>15}{'keys':>7}{'previous layout':>17}{'vs previous':>13}"
        f"{'vs N=' + format(sizes[0].n, ','):>12}{'burst mix':>11}{'(previous)':>12}  encodings",
    ]
    for s in sizes:
        b = s.redis
        out.append(f"  {b.n:>8,}{b.per_dialog:>10.1f}{b.used_memory_per_dialog:>15.1f}{b.keys:>7,}"
                   f"{b.legacy_per_dialog:>17.1f}{_x(b.per_dialog, b.legacy_per_dialog):>13}"
                   f"{_x(b.per_dialog, sizes[0].redis.per_dialog):>12}{b.mixed_per_dialog:>11.1f}"
                   f"{b.mixed_legacy_per_dialog:>12.1f}  {b.encodings}")  # fmt: skip
    out.append("  burst mix: 6 dialogs in 10 with one message, 3 with three, 1 with eight (2 messages a dialog on average)")
    return out


def _stage_line(s: ReconcileStage, ref: ReconcileStage) -> str:
    seq = f"{s.seq_scan_ms:.1f}" if s.seq_scan_ms is not None else "-"
    return (f"  {s.messages:>10,}{s.window_visitor_messages:>9,}{s.first_id_ms:>10.1f}{s.scan_ms:>9.1f}"
            f"{s.scan_call_ms:>10.1f}{seq:>12}{_x(s.scan_ms, ref.scan_ms):>10}{s.reconcile_ms:>10.1f}"
            f"{s.reconcile_scanned:>9,}{s.reconcile_scheduled:>7}")


def report_reconciler(rec: ReconcileResult | None, error: str | None) -> list[str]:
    if rec is None:
        return [f"reconciler: not measured ({error or 'no --postgres'})"]
    out = [
        f"reconciler on PostgreSQL {rec.server} (ReplyX's schema and indexes, {rec.dialogs:,} dialogs; ms, median)",
        "  batch of 5,000 from the lookback's first id (scan = the statement; +parse = snapshot.scan_visitor_messages;",
        "  no-index = the same statement with index scans forbidden, the baseline; run = reconcile() with no watermark)",
        f"  {'messages':>10}{'window':>9}{'first id':>10}{'scan':>9}{'+parse':>10}{'no-index':>12}{'vs small':>10}"
        f"{'run':>10}{'scanned':>9}{'sched':>7}",
        _stage_line(rec.small, rec.small),
        _stage_line(rec.large, rec.small),
        *(f"  plan nodes, {s.messages:,} messages: index {list(s.plan.index_scans)}, seq {list(s.plan.seq_scans)}"
          for s in (rec.small, rec.large)),
        "",
        f"  EXPLAIN (ANALYZE, BUFFERS) of the scan, {rec.large.messages:,} messages:",
        *("    " + line for line in rec.large.plan.text.splitlines()),
    ]  # fmt: skip
    return out


def report(run_: Run, checks: list[Check]) -> str:
    out = [
        f"scale: N = {', '.join(format(s.n, ',') for s in run_.sizes)} pending dialogs; whole run {run_.wall_seconds} s; "
        f"1-min load average {run_.loadavg_start_end[0]} at start, {run_.loadavg_start_end[1]} at end",
        "",
        *report_schedule(run_.sizes),
        "",
        *report_dispatch(run_.sizes),
        "",
        *report_worker(run_.idle_worker, run_.sizes),
        "",
        *report_redis(run_.sizes),
        "",
        *report_reconciler(run_.reconciler, run_.reconciler_error),
        "",
        "targets:",
        *(f"  [{'met' if c.met else 'MISSED':<6}] {c.target}" for c in checks),
        "",
        "machine:",
        *("  " + line for line in format_machine(run_.machine).splitlines()),
        "",
        "ALL TARGETS MET" if all(c.met for c in checks) else "TARGET MISSED",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="backlog sizes N, comma-separated, smallest first")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="host messages for the reconciler (0: skip it)")
    parser.add_argument("--calls", type=int, default=6000, help="timed schedule calls per path and N")
    parser.add_argument("--postgres", default=os.environ.get("NOTIFIER_BENCH_POSTGRES_URL", PG_DEFAULT),
                        help=f"an administrative PostgreSQL URL; `{PG_DATABASE}` is created and dropped there")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    except ValueError:
        parser.error("--sizes takes integers, e.g. 1000,10000,100000")
    if not sizes or min(sizes) < 1 or list(sizes) != sorted(sizes) or args.calls < 1 or args.messages < 0:
        parser.error("--sizes must be positive and ascending; --calls positive; --messages not negative")
    result = run(sizes, args.messages, args.calls, args.postgres)
    checks = evaluate(result)
    print(report(result, checks))
    if args.json:
        payload = {**asdict(result), "checks": [asdict(c) for c in checks]}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
