"""What the send-time reads of a delivery group cost: lists of ids bound as one array, or expanded.

    .venv/bin/python -m bench.reads [--dialogs 400] [--groups 300] [--rounds 6] [--seed 7]

Before a delivery is sent, its group reads its dialogs' facts again (`notifier.check.gather_many`: about
ten statements for the whole group, each with a list of dialog or manager ids). On PostgreSQL those lists
are bound as one array (`notifier.db.any_of`: `id = ANY(:ids)`). The baseline, measured in the same run, is
the same reads with the lists written as an expanding `IN (...)`, as SQLAlchemy does by default: rendered
again at every execution, one placeholder and cast per id, and one statement text per list length.

A fresh PostgreSQL database with `--dialogs` recipients (each owning a dialog with one visitor message and
one push subscription), a private redis-server, and `--groups` groups of 4 to 16 consecutive dialogs (drawn
with `--seed`), read in `--rounds` rounds; each round reads every group once each way, in alternating order,
on an engine of its own per way (so neither way's prepared statements or compiled forms serve the other).

Prints, per way: this process's CPU per dialog (the worker's side: SQLAlchemy, the driver, our code; the
median of the rounds), the PostgreSQL server's CPU per dialog for the same reads, statements per group and
how many different statement texts the server saw; and the ratio of each to the baseline. CPU time on a
shared VM drifts by tens of percent between minutes; for a figure that does not, run it under
`valgrind --tool=callgrind` with `--ways any_of` and then `--ways in`, and compare instructions.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from bench import _fleet
from bench._machine import describe, format_machine

WAYS = ("any_of", "in")
LABELS = {"any_of": "ids as one array (= ANY)", "in": "expanding IN (baseline)"}
PACKAGES = ("SQLAlchemy", "psycopg", "redis")


@dataclass(frozen=True)
class Options:
    dialogs: int
    groups: int
    rounds: int
    seed: int
    ways: tuple[str, ...]


@dataclass(frozen=True)
class WayResult:
    way: str
    cpu_ms_per_dialog: float  # median over the rounds
    cpu_spread: tuple[float, float]  # lowest and highest round
    server_ms_per_dialog: float
    statements_per_group: float
    distinct_texts: int


@contextmanager
def _compiled_as(way: str) -> Iterator[None]:
    """Compile `any_of` on PostgreSQL as an expanding IN while inside (the baseline), as itself otherwise."""
    from sqlalchemy.ext.compiler import compiles

    from notifier import db

    if way == "any_of":
        yield
        return
    dispatcher = db.AnyOf._compiler_dispatcher  # type: ignore[attr-defined]  # set by @compiles
    ours = dispatcher.specs["postgresql"]
    compiles(db.AnyOf, "postgresql")(db._in_list)
    try:
        yield
    finally:
        dispatcher.specs["postgresql"] = ours


def draw_groups(dialogs: int, count: int, seed: int) -> list[list[int]]:
    rnd = random.Random(seed)
    groups = []
    for _ in range(count):
        size = rnd.randint(4, 16)
        start = rnd.randint(1, dialogs - size + 1)
        groups.append(list(range(start, start + size)))
    return groups


def seed_database(db_url: str, dialogs: int) -> None:
    engine = _fleet.engine_for(db_url)
    try:
        _fleet.seed_recipients(engine, range(1, dialogs + 1), "https://127.0.0.1:9")
        _fleet.insert_messages(engine, [(1_000_000 + d, d, "Здравствуйте! Есть ли доставка?") for d in range(1, dialogs + 1)])
    finally:
        engine.dispose()


class _Way:
    """One way's engine and runtime, and the statements its reads sent."""

    def __init__(self, way: str, db_url: str, redis_url: str) -> None:
        from notifier.config import load_settings
        from notifier.redis_conn import client_for
        from notifier.runtime import Runtime
        from notifier.store import Store

        self.way = way
        settings = load_settings({"NOTIFIER_DATABASE_URL": db_url, "NOTIFIER_REDIS_URL": redis_url})
        self.engine: Engine = _fleet.engine_for(db_url)
        self.rt = Runtime(settings, self.engine, Store(client_for(redis_url, timeout=5.0)))
        self.texts: dict[str, int] = {}
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.texts[statement] = self.texts.get(statement, 0) + 1

    def read(self, groups: list[list[int]], now: float) -> float:
        """CPU seconds of this process for reading every group once."""
        from notifier.check import gather_many

        with _compiled_as(self.way):
            started = time.process_time()
            for group in groups:
                gather_many(self.rt, group, now)
            return time.process_time() - started

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)
        self.engine.dispose()


def measure(db_url: str, redis_url: str, opts: Options) -> list[WayResult]:
    groups = draw_groups(opts.dialogs, opts.groups, opts.seed)
    dialogs_read = sum(map(len, groups))
    now = time.time()
    ways = {w: _Way(w, db_url, redis_url) for w in opts.ways}
    try:
        for way in ways.values():  # warm: compiled forms, prepared statements, connections
            way.read(groups[:40], now)
        cpu: dict[str, list[float]] = {w: [] for w in ways}
        server: dict[str, float] = dict.fromkeys(ways, 0.0)
        statements: dict[str, int] = dict.fromkeys(ways, 0)
        for r in range(opts.rounds):
            order = list(ways) if r % 2 == 0 else list(reversed(ways))
            for name in order:
                way = ways[name]
                before_texts = sum(way.texts.values())
                # Every backend of the bench's database (both ways' pools; only one reads at a time).
                before = {pid: c for pid in _fleet._backends(db_url) if (c := _fleet._cpu_of(pid)) is not None}
                cpu[name].append(way.read(groups, now))
                after = {pid: c for pid in before if (c := _fleet._cpu_of(pid)) is not None}
                server[name] += sum(after[p] - before[p] for p in after)
                statements[name] += sum(way.texts.values()) - before_texts
        return [
            WayResult(
                way=name,
                cpu_ms_per_dialog=1000 * statistics.median(cpu[name]) / dialogs_read,
                cpu_spread=(1000 * min(cpu[name]) / dialogs_read, 1000 * max(cpu[name]) / dialogs_read),
                server_ms_per_dialog=1000 * server[name] / (dialogs_read * opts.rounds),
                statements_per_group=statements[name] / (len(groups) * opts.rounds),
                distinct_texts=len(ways[name].texts),
            )
            for name in ways
        ]
    finally:
        for way in ways.values():
            way.close()


def report(results: list[WayResult], opts: Options) -> list[str]:
    lines = [f"send-time reads (gather_many) of {opts.groups} groups of 4-16 dialogs, {opts.rounds} rounds:"]
    base = next((r for r in results if r.way == "in"), None)
    for r in results:
        ratio = ""
        if base is not None and r is not base and base.cpu_ms_per_dialog and base.server_ms_per_dialog:
            ratio = (f"  -> {r.cpu_ms_per_dialog / base.cpu_ms_per_dialog:.2f}x the baseline's worker CPU, "
                     f"{r.server_ms_per_dialog / base.server_ms_per_dialog:.2f}x its server CPU")
        lines.append(
            f"  {LABELS[r.way]:<28} worker {r.cpu_ms_per_dialog:.3f} ms/dialog (rounds {r.cpu_spread[0]:.3f}-"
            f"{r.cpu_spread[1]:.3f}), PostgreSQL {r.server_ms_per_dialog:.3f} ms/dialog, "
            f"{r.statements_per_group:.1f} statements/group, {r.distinct_texts} statement texts{ratio}"
        )
    return lines


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__.splitlines()[0])
    parser.add_argument("--dialogs", type=int, default=400)
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ways", choices=("both", *WAYS), default="both",
                        help="both (default), or one way alone (for valgrind's instruction counts)")
    a = parser.parse_args(argv)
    if a.dialogs < 16 or a.groups < 1 or a.rounds < 1:
        parser.error("--dialogs must be at least 16, --groups and --rounds at least 1")
    return Options(a.dialogs, a.groups, a.rounds, a.seed, WAYS if a.ways == "both" else (a.ways,))


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    opts = parse(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    with _fleet.private_redis(folder) as redis_url, _fleet.fresh_database("postgresql") as db_url:
        out("machine:\n" + "\n".join("  " + line for line in format_machine(describe(redis_url, PACKAGES)).splitlines()))
        seed_database(db_url, opts.dialogs)
        out("\n".join(report(measure(db_url, redis_url, opts), opts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
