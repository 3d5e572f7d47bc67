"""How fast do real workers deliver N notifications that fall due at once, next to a naive sender?

    .venv/bin/python -m bench.deliver [--quick | --n 1000 --n 10000] [--smtp-delay 0.02] [--push-delay 0.03]

Per N (default 1,000 then 10,000; --quick: 1,000): N dialogs, each owned by its own recipient who has an email
address and one push subscription; one visitor message each, already past its grace deadline, scheduled with
the Store's own script (what `schedule_fallback` runs) so every check is due at once. NOTIFIER_EMAIL_AFTER_SECONDS
equals the grace, so the check sends push and email together. Real worker processes (`tests.procs.WorkerProc`):
a control worker (queue notifier, beat, prefork, concurrency 2) and a sender (queue notifier.send, prefork,
concurrency 2), as `notifier worker` runs them. A private redis-server, a fresh PostgreSQL database (--db sqlite
for a file). The workers are running ones, as in production: warm-up dialogs go through them first, in growing
rounds until every pool process of both workers has worked (not counted), so the burst does not pay a fresh
process's one-time costs (connections, compiled statements and templates, TLS sessions).

The SMTP sink (`python -m tests.smtpserver`) and the push service in sink mode (`python -m tests.pushservice
--sink`, HTTPS with a self-signed certificate the workers trust through REQUESTS_CA_BUNDLE) run in their own
processes and delay every reply by a round trip: each SMTP reply after the greeting (so a mail on an open
connection costs MAIL, RCPT, DATA and end-of-data: four), each push answer.

Same run, same sinks, before the workers start:
  capacity  a concurrent client hammering each sink alone (what the sink can take at all);
  naive     stdlib smtplib with a new connection per mail, and plain pywebpush.webpush() per push, one after
            another (a sample of --naive-n each: a sequential rate does not depend on how many).

Figures: mails/s and pushes/s from the first deadline to the last arrival at the sink (the target's figure)
and in steady state (between the 10th and the 90th percentile arrival). Also the CPU each part used in that
window, read from /proc (each worker with its pool processes, PostgreSQL's server processes for the run's
database, each sink), as a share of one core and in ms per delivery: what limits the figures. Afterwards
every recipient is counted in the sinks' dumps: exactly one mail and one push each.

Targets: >= 10x naive for mail and for push, >= 200 mails/s and >= 300 pushes/s. A miss is reported
("MISSED"), not asserted: exit status 0 either way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import _fleet
from bench._machine import describe, format_machine
from bench._sinkload import Rate, naive_push, naive_smtp, push_capacity, smtp_capacity

GRACE = 2.0
SIZES = (1_000, 10_000)
RATIO_TARGET = 10.0
MAIL_TARGET = 200.0
PUSH_TARGET = 300.0
PACKAGES = ("celery", "kombu", "redis", "SQLAlchemy", "psycopg", "aiosmtplib", "aiosmtpd", "pywebpush", "requests")
MESSAGE_BASE = 10_000_000
# Before each burst, warm-up dialogs (ids above N, not counted) go through the workers in rounds until every
# pool process has checked or sent something: a process's first work pays one-time costs (connections,
# compiled statements and templates, TLS sessions) that a running worker has long paid.
WARM_ROUNDS = (20, 60, 180, 540)  # dialogs per round: a bigger round keeps one process busy, so another gets work
WORK_MARKERS = {"control": "decision at=check", "sender": "outcome=sent"}


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    smtp_delay: float
    push_delay: float
    db: str
    naive_n: int
    capacity_seconds: float
    capacity_concurrency: int
    timeout: float
    loglevel: str
    settings: tuple[tuple[str, str], ...] = ()  # --set: extra NOTIFIER_* for the workers


@dataclass(frozen=True)
class Baselines:
    smtp_capacity: Rate
    push_capacity: Rate
    naive_smtp: Rate
    naive_push: Rate


@dataclass(frozen=True)
class Flow:
    """One channel's arrivals at its sink, against the common deadline."""

    count: int
    first_after_deadline: float  # seconds from the deadline to the first arrival
    last_after_deadline: float
    per_s: float  # count / (last arrival - deadline)
    steady_per_s: float  # between the 10th and 90th percentile arrivals


@dataclass(frozen=True)
class Exactly:
    expected: int
    once: int
    missing: int
    duplicated: int
    strangers: int  # arrivals for nobody we seeded

    @property
    def ok(self) -> bool:
        return self.once == self.expected and not self.missing and not self.duplicated and not self.strangers


@dataclass(frozen=True)
class SizeResult:
    n: int
    layout: str
    seed_seconds: float
    warm_up: int
    complete: bool
    mail: Flow
    push: Flow
    mail_exact: Exactly
    push_exact: Exactly
    ledger: dict[str, int] = field(default_factory=dict)
    window: float = 0.0  # seconds from the deadline to the last arrival (or giving up)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per part in that window


# ------------------------------------------------------------------------------------------------- phases


def measure_baselines(sinks: _fleet.Sinks, opts: Options) -> Baselines:
    try:
        return Baselines(
            smtp_capacity=smtp_capacity(sinks.smtp.port, opts.capacity_concurrency, opts.capacity_seconds),
            push_capacity=push_capacity(sinks.push_origin, sinks.cert_file, opts.capacity_concurrency, opts.capacity_seconds),
            naive_smtp=naive_smtp(sinks.smtp.port, opts.naive_n),
            naive_push=naive_push(sinks.push_origin, sinks.cert_file, opts.naive_n),
        )
    finally:
        sinks.reset()


QUESTION = "Здравствуйте! Есть ли доставка в Екатеринбург?"


def seed(db_url: str, n: int, spare: int, push_origin: str) -> list[tuple[int, int]]:
    """N + `spare` recipients with their dialogs and subscriptions; one visitor message in each of the first
    N (the spare ones get theirs when used: a message nobody scheduled is found by the reconciler, which
    would send it in the middle of the burst). Returns (dialog, message) pairs for all."""
    engine = _fleet.engine_for(db_url)
    try:
        _fleet.seed_recipients(engine, range(1, n + spare + 1), push_origin)
        pairs = [(i, MESSAGE_BASE + i) for i in range(1, n + spare + 1)]
        _fleet.insert_messages(engine, [(m, d, QUESTION) for d, m in pairs[:n]])
        return pairs
    finally:
        engine.dispose()


def wait_for_sinks(sinks: _fleet.Sinks, fleet: _fleet.Fleet, n: int, timeout: float, stall: float = 60.0) -> bool:
    """Until both sinks hold n, the workers die, nothing arrives for `stall` seconds, or `timeout`."""
    start = last_change = time.monotonic()
    seen = (-1, -1)
    next_note = start + 10
    while True:
        counts = sinks.counts()
        now = time.monotonic()
        if counts != seen:
            seen, last_change = counts, now
        if min(counts) >= n:
            return True
        if not fleet.alive() or now - start > timeout or now - last_change > stall:
            print(f"  stopped waiting: mails {counts[0]}/{n}, pushes {counts[1]}/{n}", file=sys.stderr)
            if not fleet.alive():
                print(fleet.describe(), file=sys.stderr)
            return False
        if now >= next_note:
            print(f"  ... {now - start:.0f} s: mails {counts[0]}/{n}, pushes {counts[1]}/{n}", file=sys.stderr)
            next_note = now + 10
        time.sleep(0.5)


def flow(times: list[float], deadline: float) -> Flow:
    if not times:
        return Flow(0, 0.0, 0.0, 0.0, 0.0)
    times = sorted(times)
    n = len(times)
    lo, hi = int(n * 0.1), max(int(n * 0.9) - 1, 0)
    span = times[hi] - times[lo]
    total = times[-1] - deadline
    return Flow(n, times[0] - deadline, total, n / total if total > 0 else 0.0, (hi - lo) / span if span > 0 else 0.0)


def exactly_once(recipients: list[int | None], n: int) -> Exactly:
    counts = Counter(r for r in recipients if r is not None and 1 <= r <= n)
    strangers = sum(1 for r in recipients if r is None or not 1 <= r <= n)
    return Exactly(n, sum(1 for c in counts.values() if c == 1), n - len(counts),
                   sum(1 for c in counts.values() if c > 1), strangers)


def ledger_counts(db_url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from notifier import models

    engine = _fleet.engine_for(db_url)
    try:
        with engine.connect() as conn:
            d = models.deliveries
            rows = conn.execute(select(d.c.channel, d.c.status, func.count()).group_by(d.c.channel, d.c.status)).all()
        return {f"{channel} {status}": int(count) for channel, status, count in rows}
    finally:
        engine.dispose()


def warm_up_fleet(fleet: _fleet.Fleet, sinks: _fleet.Sinks, db_url: str, redis_url: str,
                  warm: list[tuple[int, int]], loglevel: str) -> int:
    """Warm-up rounds (WARM_ROUNDS), each delivered before the next, until every pool process has done some
    work (read from the INFO lines of the workers' logs; without them, all the rounds). Celery hands a task
    to an idle pool process, the same one again and again while it keeps up; a bigger round keeps it busy
    long enough for the others to get some. Returns how many warm-up dialogs went through; the sinks are
    emptied afterwards."""
    sinks.reset()
    verbose = loglevel.lower() in ("info", "debug")
    done = 0
    engine = _fleet.engine_for(db_url)
    try:
        for size in WARM_ROUNDS:
            rows = warm[done : done + size]
            _fleet.insert_messages(engine, [(m, d, QUESTION) for d, m in rows])
            _fleet.schedule_due(redis_url, rows, time.time() - GRACE, GRACE)
            done += size
            if not wait_for_sinks(sinks, fleet, done, 60):
                raise RuntimeError("the warm-up dialogs were not delivered within 60 s")
            time.sleep(0.5)  # their records written and logged
            if verbose and not fleet.idle_children(WORK_MARKERS):
                break
    finally:
        engine.dispose()
    idle = fleet.idle_children(WORK_MARKERS) if verbose else []
    if idle:
        print(f"  warm-up: still idle after {done} dialogs: {', '.join(idle)}", file=sys.stderr)
    sinks.reset()
    return done


def run_size(n: int, sinks: _fleet.Sinks, opts: Options, folder: Path) -> SizeResult:
    with _fleet.fresh_database(opts.db) as db_url, _fleet.private_redis(folder) as redis_url:
        t0 = time.perf_counter()
        pairs = seed(db_url, n, sum(WARM_ROUNDS), sinks.push_origin)
        burst, warm = pairs[:n], pairs[n:]
        seed_seconds = time.perf_counter() - t0
        env = _fleet.fleet_env(db_url, redis_url, sinks, folder, NOTIFIER_GRACE_SECONDS=str(GRACE),
                               NOTIFIER_EMAIL_AFTER_SECONDS=str(GRACE), **dict(opts.settings))
        fleet = _fleet.start_fleet(folder, env, opts.loglevel)
        try:
            # Running workers, as in production: a freshly started one pays its one-time costs (connections,
            # compiled statements and templates, TLS sessions) on its first deliveries, not on the burst's.
            warm_up = warm_up_fleet(fleet, sinks, db_url, redis_url, warm, opts.loglevel)
            meter = _fleet.CpuMeter(fleet, sinks, db_url)
            meter.start()
            deadline = _fleet.schedule_due(redis_url, burst, time.time() - GRACE, GRACE)
            complete = wait_for_sinks(sinks, fleet, n, opts.timeout)
            window, cpu = meter.stop()
            mails = sinks.smtp.command("dump")["messages"]
            pushes = sinks.push.command("dump")["pushes"]
        finally:
            fleet.stop()
        ledger = ledger_counts(db_url)
    mail_to = [_fleet.recipient_of_email(m["rcpt_tos"][0]) if len(m["rcpt_tos"]) == 1 else None for m in mails]
    return SizeResult(
        n=n, layout=fleet.layout, seed_seconds=seed_seconds, warm_up=warm_up, complete=complete,
        mail=flow([m["at"] for m in mails], deadline), push=flow([p["at"] for p in pushes], deadline),
        mail_exact=exactly_once(mail_to, n),
        push_exact=exactly_once([_fleet.recipient_of_push(p["name"]) for p in pushes], n),
        ledger=ledger, window=window, cpu=cpu,
    )


# ------------------------------------------------------------------------------------------------- report


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report_baselines(b: Baselines, opts: Options) -> list[str]:
    lines = [f"sinks: SMTP delays each reply after the greeting {opts.smtp_delay * 1000:.0f} ms, push each answer "
             f"{opts.push_delay * 1000:.0f} ms; each in its own process",
             "workers' settings beyond the defaults: "
             + (", ".join(f"{k}={v}" for k, v in opts.settings) or "none (grace and email delay aside)"), ""]
    for r in (b.smtp_capacity, b.push_capacity, b.naive_smtp, b.naive_push):
        lines.append(f"  {r.what:<56} {r.per_s:>8.1f} /s  ({r.count} in {r.seconds:.2f} s, {r.failures} failures)")
    return lines


def report_size(r: SizeResult, b: Baselines) -> list[str]:
    lines = [
        "",
        f"N = {r.n:,} dialogs due at once ({r.layout}); seeded in {r.seed_seconds:.1f} s; "
        f"{r.warm_up} warm-up dialogs delivered first, until every pool process had worked (not counted; in the "
        "ledger's figures)"
        + ("" if r.complete else "; INCOMPLETE: stopped waiting"),
    ]
    for label, f, naive, cap, target, ex in (
        ("mail", r.mail, b.naive_smtp, b.smtp_capacity, MAIL_TARGET, r.mail_exact),
        ("push", r.push, b.naive_push, b.push_capacity, PUSH_TARGET, r.push_exact),
    ):
        ratio = f.per_s / naive.per_s if naive.per_s else 0.0
        lines += [
            f"  {label}: {f.count:,} arrived, first {f.first_after_deadline:.2f} s and last {f.last_after_deadline:.2f} s "
            f"after the deadline",
            f"    {f.per_s:8.1f} /s deadline to last (steady state {f.steady_per_s:.1f} /s); "
            f"{f.per_s / cap.per_s:.2f} of the sink's capacity",
            f"    ours / naive = {ratio:.1f}x (target >= {RATIO_TARGET:g}x: {_met(ratio >= RATIO_TARGET and r.complete)}); "
            f">= {target:g} /s: {_met(f.per_s >= target and r.complete)}",
            f"    exactly once: {ex.once:,} of {ex.expected:,} recipients, {ex.missing} missing, {ex.duplicated} duplicated, "
            f"{ex.strangers} strangers -> {'OK' if ex.ok else 'FAILED'}",
        ]
    lines.append("  ledger: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.ledger.items())))
    # What the two cores did meanwhile: where the CPU went, per delivery (a mail and a push per dialog).
    total = sum(r.cpu.values())
    lines.append(f"  CPU from the deadline to the last arrival ({r.window:.1f} s; {total / r.window * 100:.0f} % of one core "
                 f"in all): ms per delivery")
    lines.append("    " + ", ".join(f"{name} {seconds / r.window * 100:.0f} % ({seconds * 1000 / (2 * r.n):.2f})"
                                    for name, seconds in sorted(r.cpu.items(), key=lambda kv: -kv[1])))
    return lines


# ------------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.deliver", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="dialogs due at once (repeatable; default 1000 and 10000)")
    parser.add_argument("--quick", action="store_true", help="only N = 1000")
    parser.add_argument("--smtp-delay", type=float, default=0.02, help="seconds per SMTP reply (default 0.02)")
    parser.add_argument("--push-delay", type=float, default=0.03, help="seconds per push answer (default 0.03)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--naive-n", type=int, default=40, help="mails and pushes the naive baselines send (default 40)")
    parser.add_argument("--capacity-seconds", type=float, default=3.0)
    parser.add_argument("--capacity-concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting for a size after this")
    parser.add_argument("--loglevel", default="info", help="the workers' log level (default info, as in production)")
    parser.add_argument("--set", action="append", metavar="NOTIFIER_NAME=VALUE",
                        help="a setting for the workers (repeatable), e.g. NOTIFIER_MAX_IN_FLIGHT_PER_HOST=32")
    a = parser.parse_args(argv)
    sizes = (1_000,) if a.quick else tuple(a.n or SIZES)
    return Options(sizes, a.smtp_delay, a.push_delay, a.db, a.naive_n, a.capacity_seconds, a.capacity_concurrency,
                   a.timeout, a.loglevel, _fleet.worker_settings(a.set))


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    print("machine:\n" + "\n".join("  " + line for line in format_machine(describe(None, PACKAGES)).splitlines()))
    folder = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    sinks = _fleet.start_sinks(opts.smtp_delay, opts.push_delay)
    try:
        baselines = measure_baselines(sinks, opts)
        print("\n".join(report_baselines(baselines, opts)), flush=True)
        for n in opts.sizes:
            try:
                result = run_size(n, sinks, opts, folder / f"n{n}")
            except Exception:  # noqa: BLE001 - a benchmark reports, it does not fail the build
                print(f"\nN = {n:,}: benchmark failed\n{traceback.format_exc()}", flush=True)
                continue
            print("\n".join(report_size(result, baselines)), flush=True)
    finally:
        sinks.close()
    print(f"\nworker logs: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
