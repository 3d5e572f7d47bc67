"""Retention on a million rows: bounded batches (what the beat task runs) against one unbounded DELETE.

    .venv/bin/python -m bench.retention [--rows 1000000] [--db sqlite,postgresql] [--pg-url URL] [--json PATH]

For each database (a temporary SQLite file; a fresh PostgreSQL database, dropped afterwards) our tables
are created by the migrations, then filled with `--rows` decisions and `--rows` deliveries, 90 % of them
older than the 30-day cut-off (deliveries: 80 % sent, 8 % failed, 8 % skipped, 4 % pending; old pending
ones must stay). Two ways to delete the same rows, each on a fresh fill, in the same run:

  A. `notifier.ledger.purge_history` (1,000 rows per statement, oldest first, by index, one transaction each);
  B. baseline: one `DELETE ... WHERE created_at < cutoff` (and one for finished deliveries), one transaction.

Meanwhile a writer thread inserts a decision every 20 ms, as the worker would, and records how long each
insert waited: the cost of the lock each way holds. Printed per database and way: rows deleted, rows/s,
the longest single statement, the writer's worst and p99 wait. Nothing is asserted; exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select, text

from bench._machine import describe, format_machine
from notifier import models
from notifier.db import dispose_all, get_engine
from notifier.ledger import purge_history
from notifier.ledger.retention import DAY, FINISHED
from notifier.migrate import upgrade

DAYS = 30
OLD_SHARE = 0.9
WRITER_EVERY = 0.02
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Figures:
    database: str
    way: str
    rows_deleted: int
    seconds: float
    rows_per_second: float
    statements: int
    longest_statement_ms: float
    writer_inserts: int
    writer_worst_ms: float
    writer_p99_ms: float
    kept_unfinished_old: int
    fill_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _fill(engine: Engine, rows: int, now: float) -> float:
    """`rows` decisions and `rows` deliveries, set-based (INSERT ... SELECT over a series)."""
    started = time.perf_counter()
    cutoff = now - DAYS * DAY
    old = int(rows * OLD_SHARE)
    # Row g: old rows spread over the 30 days before the cut-off, young ones over the 30 days after it.
    at = (f"CASE WHEN g <= {old} THEN {cutoff - 30 * DAY} + g * {30 * DAY / old} "
          f"ELSE {cutoff} + (g - {old}) * {30 * DAY / max(1, rows - old)} END")
    status = "CASE g % 25 WHEN 0 THEN 'pending' WHEN 1 THEN 'failed' WHEN 2 THEN 'failed' WHEN 3 THEN 'skipped' " \
             "WHEN 4 THEN 'skipped' ELSE 'sent' END"
    if engine.dialect.name == "postgresql":
        series = f"FROM generate_series(1, {rows}) AS s(g)"
        prefix = ""
    else:
        series = "FROM s"
        prefix = f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {rows}) "
    with engine.begin() as conn:
        conn.execute(text(
            f"{prefix}INSERT INTO notifier_decisions (dialog_id, manager_id, action, reason, channel, burst_floor, "
            f"first_message_id, last_message_id, created_at) SELECT g % 5000 + 1, 7, 'skip', 'read', NULL, 0, NULL, NULL, "
            f"{at} {series}"))
        conn.execute(text(
            f"{prefix}INSERT INTO notifier_deliveries (dialog_id, manager_id, channel, target, burst_floor, first_message_id, "
            f"last_message_id, status, attempts, created_at, updated_at, sent_at) SELECT g, 7, 'email', '', 0, 1, 1, "
            f"{status}, 1, {at} - 60, {at}, {at} {series}"))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    return time.perf_counter() - started


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(models.decisions.delete())
        conn.execute(models.deliveries.delete())
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM notifier_decisions, notifier_deliveries"))
    else:
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))


class Writer(threading.Thread):
    """Inserts a decision every WRITER_EVERY seconds and keeps each insert's wait."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.engine, self.waits, self.stop = engine, [], threading.Event()
        self.waits: list[float]

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            with self.engine.begin() as conn:
                conn.execute(insert(models.decisions).values(
                    dialog_id=1, manager_id=7, action="notify", reason="unread", channel="email", burst_floor=0,
                    created_at=time.time()))
            self.waits.append(time.perf_counter() - started)
            self.stop.wait(WRITER_EVERY)


class StatementClock:
    """Duration of every DELETE the engine runs while attached."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.durations = engine, []
        self.durations: list[float]
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            self.durations.append(time.perf_counter() - conn.info.pop("bench_started"))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def _unbounded(engine: Engine, now: float) -> int:
    cutoff = now - DAYS * DAY
    dec, dl = models.decisions, models.deliveries
    with engine.begin() as conn:
        n = conn.execute(dec.delete().where(dec.c.created_at < cutoff)).rowcount
    with engine.begin() as conn:
        n += conn.execute(dl.delete().where(dl.c.updated_at < cutoff, dl.c.status.in_(FINISHED))).rowcount
    return int(n)


def _measure(database: str, way: str, engine: Engine, rows: int) -> Figures:
    now = time.time()
    fill = _fill(engine, rows, now)
    writer, clock = Writer(engine), StatementClock(engine)
    writer.start()
    time.sleep(0.5)  # the writer's quiet baseline
    started = time.perf_counter()
    try:
        if way == "batched":
            purged = purge_history(engine, DAYS, now=now, max_batches=rows)
            deleted = purged.decisions + purged.deliveries
        else:
            deleted = _unbounded(engine, now)
        seconds = time.perf_counter() - started
    finally:
        time.sleep(0.5)
        writer.stop.set()
        writer.join(timeout=30)
        clock.close()
    dl = models.deliveries
    with engine.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(dl).where(
            dl.c.status == "pending", dl.c.updated_at < now - DAYS * DAY)).scalar_one()
    waits = sorted(writer.waits)
    _empty(engine)
    return Figures(
        database=database, way=way, rows_deleted=deleted, seconds=round(seconds, 2),
        rows_per_second=round(deleted / seconds), statements=len(clock.durations),
        longest_statement_ms=round(max(clock.durations) * 1000, 1), writer_inserts=len(waits),
        writer_worst_ms=round(waits[-1] * 1000, 1), writer_p99_ms=round(waits[int(len(waits) * 0.99)] * 1000, 1),
        kept_unfinished_old=int(kept), fill_seconds=round(fill, 1),
    )


def _database(kind: str, pg_url: str, folder: Path) -> tuple[Engine, str, Any]:
    """An engine on a fresh database with our tables, its version, and a cleanup callable."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'retention.sqlite3'}"
        engine = get_engine(url)
        upgrade(engine)
        return engine, f"SQLite {sqlite3.sqlite_version} (WAL, one file on local disk)", lambda: None
    name = f"notifier_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = get_engine(pg_url.rsplit("/", 1)[0] + f"/{name}")
    upgrade(engine)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()

    def drop() -> None:
        dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return engine, f"PostgreSQL {version} (loopback)", drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="decisions, and deliveries, to fill (each)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)")
    parser.add_argument("--pg-url", default=os.environ.get("NOTIFIER_TEST_POSTGRES_URL", PG_DEFAULT))
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    machine = describe(None, packages=("SQLAlchemy", "psycopg", "alembic"))
    print(format_machine(machine))
    results: list[Figures] = []
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        for kind in [k.strip() for k in args.db.split(",") if k.strip()]:
            engine, version, cleanup = _database(kind, args.pg_url, Path(tmp))
            versions[kind] = version
            print(f"\n{version}: {args.rows:,} decisions + {args.rows:,} deliveries per way, "
                  f"{OLD_SHARE:.0%} older than {DAYS} days")
            try:
                for way in ("batched", "unbounded"):
                    figures = _measure(kind, way, engine, args.rows)
                    results.append(figures)
                    print(f"  {way:9}  deleted {figures.rows_deleted:>9,} in {figures.seconds:6.2f} s = "
                          f"{figures.rows_per_second:>8,} rows/s; {figures.statements:>5} statements, longest "
                          f"{figures.longest_statement_ms:8.1f} ms; writer waited at worst {figures.writer_worst_ms:8.1f} ms "
                          f"(p99 {figures.writer_p99_ms} ms, {figures.writer_inserts} inserts); "
                          f"old pending kept {figures.kept_unfinished_old:,}")
            finally:
                cleanup()
    for kind in versions:
        batched = next(f for f in results if f.database == kind and f.way == "batched")
        baseline = next(f for f in results if f.database == kind and f.way == "unbounded")
        print(f"\n{kind}: batched runs at {batched.rows_per_second / baseline.rows_per_second:.2f}x the baseline's rows/s; "
              f"its longest statement is {batched.longest_statement_ms / baseline.longest_statement_ms:.4f}x the baseline's; "
              f"the writer's worst wait {batched.writer_worst_ms} ms vs {baseline.writer_worst_ms} ms")
    if args.json:
        payload = {"machine": machine, "databases": versions, "rows": args.rows, "results": [asdict(r) for r in results]}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
