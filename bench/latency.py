"""How late are notifications under a steady stream of visitor messages?

    .venv/bin/python -m bench.latency [--rate 200] [--dialogs 2000] [--seconds 60] [--grace 2]

A host writes --rate visitor messages per second for --seconds into --dialogs dialogs (a random dialog each
time, seeded), each one committed to the host's database and then scheduled with `worker.client.schedule_fallback`,
exactly as a host's API process does. Nobody reads: every burst's grace deadline passes and its owner gets a
push and an email (NOTIFIER_EMAIL_AFTER_SECONDS = grace, so both fall due at the grace deadline). Same parts as
bench.deliver: real workers, the delayed SMTP and push sinks in their own processes, a private redis-server,
a fresh PostgreSQL database.

Lateness = arrival at the sink - the burst's deadline (its first message's schedule time + grace). Arrivals
are matched to the ledger's sent deliveries per recipient and channel, in order. Printed: p50, p90, p99, max
per channel, for all bursts and for those whose deadline falls in the second half of the load (after the
opening wave, in which nearly every dialog opens its first burst within dialogs / rate seconds).

Baseline, same run, before the load: the bare Celery round trip (apply_async of a no-op task -> the task
starts) on the same Redis, with a solo worker (bench/_echo_app.py); and the dispatcher's tick
(NOTIFIER_DISPATCH_INTERVAL_SECONDS), which a due check waits for on average half of.

Targets: p99 < 2 s and p50 < 0.5 s for both channels. A miss is reported ("MISSED"), exit status 0 either way.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _fleet
from bench._machine import describe, format_machine
from tests.procs import WorkerProc

PACKAGES = ("celery", "kombu", "redis", "SQLAlchemy", "psycopg", "aiosmtplib", "aiosmtpd", "requests")
P50_TARGET, P99_TARGET = 0.5, 2.0
MESSAGE_BASE = 20_000_000
ECHO_ROUND_TRIPS = 200


@dataclass(frozen=True)
class Options:
    rate: float
    dialogs: int
    seconds: float
    grace: float
    smtp_delay: float
    push_delay: float
    db: str
    drain: float
    seed: int
    loglevel: str
    settings: tuple[tuple[str, str], ...] = ()  # --set: extra NOTIFIER_* for the workers


@dataclass(frozen=True)
class Spread:
    count: int
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class Produced:
    messages: int
    seconds: float
    worst_behind: float  # how far the producer fell behind its schedule, at worst
    seen_at: dict[int, float]  # message id -> when it was scheduled


@dataclass(frozen=True)
class Lateness:
    push: Spread
    email: Spread
    # Bursts whose deadline falls in the second half of the load: after the opening wave, in which nearly
    # every dialog opens its first burst (dialogs / rate seconds: each one's first message).
    push_later: Spread
    email_later: Spread
    unmatched: dict[str, int]  # ledger rows without an arrival, arrivals without a ledger row
    ledger_sent: dict[str, int]


def spread(values: list[float]) -> Spread:
    if not values:
        return Spread(0, 0.0, 0.0, 0.0, 0.0)
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, int(p * len(v)))]

    return Spread(len(v), q(0.5), q(0.9), q(0.99), v[-1])


# ------------------------------------------------------------------------------------------------- phases


def celery_round_trip(folder: Path, redis_url: str, count: int = ECHO_ROUND_TRIPS, pace: float = 0.02) -> Spread:
    """apply_async -> task start on a bare Celery app and a solo worker (Redis DB 2 of the same server)."""
    import os

    import redis

    url = redis_url.rsplit("/", 1)[0] + "/2"
    os.environ["BENCH_BROKER"] = url
    from bench import _echo_app

    proc = WorkerProc(folder, {"BENCH_BROKER": url}, name="echo", app="bench._echo_app", queues="celery", quiet=True)
    proc.start()
    r: Any = redis.Redis.from_url(url)
    try:
        for _ in range(count):
            _echo_app.stamp.apply_async((time.time(),))
            time.sleep(pace)
        deadline = time.monotonic() + 30
        while r.llen(_echo_app.LAGS) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return spread([float(x) for x in r.lrange(_echo_app.LAGS, 0, -1)])
    finally:
        r.close()
        _echo_app.app.close()
        proc.stop()


def produce(db_url: str, opts: Options) -> Produced:
    """The host: insert a visitor message, commit, schedule_fallback; --rate per second for --seconds."""
    from sqlalchemy import insert

    from notifier import host
    from worker import client

    engine = _fleet.engine_for(db_url)
    rng = random.Random(opts.seed)
    total = int(opts.rate * opts.seconds)
    seen: dict[int, float] = {}
    worst = 0.0
    start = time.monotonic()
    try:
        for k in range(total):
            due = start + k / opts.rate
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                worst = max(worst, now - due)
            message_id, dialog_id = MESSAGE_BASE + k, rng.randrange(1, opts.dialogs + 1)
            with engine.begin() as conn:
                conn.execute(insert(host.dialog_messages).values(
                    id=message_id, dialog_id=dialog_id, sender="user", text="Есть ли доставка в Екатеринбург?",
                    timestamp=_fleet.host_now(), message_kind="text"))
            seen[message_id] = time.time()
            client.schedule_fallback(dialog_id, message_id)
    finally:
        engine.dispose()
    return Produced(total, time.monotonic() - start, worst, seen)


def pending_deliveries(db_url: str) -> int:
    from sqlalchemy import func, select

    from notifier import models

    engine = _fleet.engine_for(db_url)
    try:
        with engine.connect() as conn:
            d = models.deliveries
            open_rows = select(func.count()).select_from(d).where(d.c.status.in_(("pending", "sending")))
            return int(conn.execute(open_rows).scalar_one())
    finally:
        engine.dispose()


def drain(db_url: str, sinks: _fleet.Sinks, opts: Options) -> float:
    """After the load: until no delivery is left and the sinks stop moving for two grace periods."""
    start = time.monotonic()
    last, quiet_since = sinks.counts(), time.monotonic()
    while time.monotonic() - start < opts.drain:
        time.sleep(0.5)
        counts = sinks.counts()
        if counts != last:
            last, quiet_since = counts, time.monotonic()
        elif time.monotonic() - quiet_since > 2 * opts.grace + 2 and pending_deliveries(db_url) == 0:
            break
    return time.monotonic() - start


def lateness(db_url: str, sinks: _fleet.Sinks, produced: Produced, grace: float) -> Lateness:
    """Match each recipient's arrivals to their sent ledger rows in order; lateness against the burst's deadline."""
    from sqlalchemy import select

    from notifier import models

    engine = _fleet.engine_for(db_url)
    try:
        with engine.connect() as conn:
            d = models.deliveries
            rows = conn.execute(select(d.c.dialog_id, d.c.channel, d.c.first_message_id)
                                .where(d.c.status == "sent").order_by(d.c.id)).all()
    finally:
        engine.dispose()
    sent: dict[tuple[int, str], list[int]] = defaultdict(list)
    for dialog_id, channel, first in rows:
        sent[(int(dialog_id), str(channel))].append(int(first))
    arrived: dict[tuple[int, str], list[float]] = defaultdict(list)
    for m in sinks.smtp.command("dump")["messages"]:
        if (who := _fleet.recipient_of_email(m["rcpt_tos"][0])) is not None:
            arrived[(who, "email")].append(m["at"])
    for p in sinks.push.command("dump")["pushes"]:
        if (who := _fleet.recipient_of_push(p["name"])) is not None:
            arrived[(who, "webpush")].append(p["at"])
    late: dict[str, list[float]] = {"webpush": [], "email": []}
    later: dict[str, list[float]] = {"webpush": [], "email": []}
    half = min(produced.seen_at.values(), default=0.0) + produced.seconds / 2
    unmatched = {"ledger rows without arrival": 0, "arrivals without ledger row": 0}
    for key in set(sent) | set(arrived):
        firsts, times = sent.get(key, []), sorted(arrived.get(key, []))
        for first, at in zip(firsts, times, strict=False):
            deadline = produced.seen_at[first] + grace
            late[key[1]].append(at - deadline)
            if deadline >= half:
                later[key[1]].append(at - deadline)
        unmatched["ledger rows without arrival"] += max(0, len(firsts) - len(times))
        unmatched["arrivals without ledger row"] += max(0, len(times) - len(firsts))
    counts = {ch: sum(len(v) for k, v in sent.items() if k[1] == ch) for ch in ("webpush", "email")}
    return Lateness(spread(late["webpush"]), spread(late["email"]), spread(later["webpush"]), spread(later["email"]),
                    unmatched, counts)


# ------------------------------------------------------------------------------------------------- report


def report(opts: Options, layout: str, tick: str, base: Spread, produced: Produced, drained: float, late: Lateness) -> str:
    def ms(x: float) -> str:
        return f"{x * 1000:8.0f}"

    lines = [
        "",
        f"load: {produced.messages:,} visitor messages into {opts.dialogs:,} dialogs at {opts.rate:g}/s "
        f"(achieved {produced.messages / produced.seconds:.1f}/s over {produced.seconds:.1f} s, at worst "
        f"{produced.worst_behind * 1000:.0f} ms behind schedule); grace {opts.grace:g} s; drained in {drained:.1f} s",
        f"workers: {layout}; dispatch tick {tick} s; settings beyond the defaults: "
        + (", ".join(f"{k}={v}" for k, v in opts.settings) or "none (grace and email delay aside)"),
        f"sinks: SMTP {opts.smtp_delay * 1000:.0f} ms per reply after the greeting, push {opts.push_delay * 1000:.0f} ms "
        "per answer; each in its own process",
        f"sent (ledger): push {late.ledger_sent['webpush']:,}, email {late.ledger_sent['email']:,}; unmatched: "
        + ", ".join(f"{k} {v}" for k, v in late.unmatched.items()),
        "",
        "lateness (ms)                          count      p50      p90      p99      max",
        f"  baseline: bare Celery round trip  {base.count:>7} {ms(base.p50)} {ms(base.p90)} {ms(base.p99)} {ms(base.max)}",
    ]
    for label, s in (("push  (arrival - deadline)", late.push), ("email (arrival - deadline)", late.email),
                     ("push,  deadlines in 2nd half", late.push_later), ("email, deadlines in 2nd half", late.email_later)):
        lines.append(f"  {label:<33} {s.count:>7} {ms(s.p50)} {ms(s.p90)} {ms(s.p99)} {ms(s.max)}")
    lines.append("")
    for label, s in (("push", late.push), ("email", late.email)):
        ratio = s.p50 / base.p50 if base.p50 > 0 else float("inf")
        ok = s.count > 0
        lines.append(
            f"  {label}: p50 {s.p50:.3f} s = {ratio:.0f}x the Celery round trip's p50; "
            f"p50 < {P50_TARGET:g} s: {'met' if ok and s.p50 < P50_TARGET else 'MISSED'}, "
            f"p99 < {P99_TARGET:g} s: {'met' if ok and s.p99 < P99_TARGET else 'MISSED'}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="visitor messages per second (default 200)")
    parser.add_argument("--dialogs", type=int, default=2000, help="dialogs they go to (default 2000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts (default 60)")
    parser.add_argument("--grace", type=float, default=2.0, help="NOTIFIER_GRACE_SECONDS (default 2)")
    parser.add_argument("--smtp-delay", type=float, default=0.02)
    parser.add_argument("--push-delay", type=float, default=0.03)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--drain", type=float, default=300.0, help="longest wait for the backlog after the load")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--set", action="append", metavar="NOTIFIER_NAME=VALUE",
                        help="a setting for the workers (repeatable), e.g. NOTIFIER_MAX_IN_FLIGHT_PER_HOST=32")
    a = parser.parse_args(argv)
    return Options(a.rate, a.dialogs, a.seconds, a.grace, a.smtp_delay, a.push_delay, a.db, a.drain, a.seed, a.loglevel,
                   _fleet.worker_settings(a.set))


def main(argv: list[str] | None = None) -> int:
    from notifier.config import get_settings, load_settings, set_settings
    from notifier.redis_conn import reset_clients

    opts = parse(argv)
    print("machine:\n" + "\n".join("  " + line for line in format_machine(describe(None, PACKAGES)).splitlines()))
    folder = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    sinks = _fleet.start_sinks(opts.smtp_delay, opts.push_delay)
    try:
        with _fleet.fresh_database(opts.db) as db_url, _fleet.private_redis(folder) as redis_url:
            engine = _fleet.engine_for(db_url)
            _fleet.seed_recipients(engine, range(1, opts.dialogs + 1), sinks.push_origin)
            engine.dispose()
            base = celery_round_trip(folder, redis_url)
            env = _fleet.fleet_env(db_url, redis_url, sinks, folder, NOTIFIER_GRACE_SECONDS=str(opts.grace),
                                   NOTIFIER_EMAIL_AFTER_SECONDS=str(opts.grace), **dict(opts.settings))
            set_settings(load_settings(env))  # this process is the host: schedule_fallback reads these
            reset_clients()
            tick = str(get_settings().dispatch_interval_seconds)
            fleet = _fleet.start_fleet(folder, env, opts.loglevel)
            try:
                sinks.reset()
                produced = produce(db_url, opts)
                drained = drain(db_url, sinks, opts)
                late = lateness(db_url, sinks, produced, opts.grace)
            finally:
                fleet.stop()
                reset_clients()
                set_settings(None)
            print(report(opts, fleet.layout, tick, base, produced, drained, late), flush=True)
    finally:
        sinks.close()
    print(f"\nworker logs: {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
