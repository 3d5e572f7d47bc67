"""The reconciler's phase of `bench.scale`: its queries on a PostgreSQL database with ReplyX's schema and
production indexes (examples/replyx_host/schema.py), first with only the last day's messages, then with the
whole history behind them.

The host's tables are the host's: nothing here adds an index to them. The reconciler reads
`dialog_messages` by primary key from a watermark (see notifier/reconcile.py), so its work should follow
the messages of the lookback window, not the size of the table.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from tests.support import captured_statements

DIALOGS = 50_000
TENANTS = 200
DAY_MESSAGES = 30_000  # messages a day, at a steady rate
WINDOW_HOURS = 28.0  # the small stage: the lookback (24 h) and the 3 h Moscow-time allowance, and then some
UNCOVERED_S = 600.0  # messages of the last ten minutes have no finished check yet
REPEATS = 9
BATCH = 5000  # the reconciler's batch (notifier.reconcile.reconcile's default)
INDEX_SCANS_OFF = ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan")  # the baseline plan


@dataclass(frozen=True)
class Plan:
    text: str
    index_scans: tuple[str, ...]  # "Index Scan using <index> on <table>" lines, in plan order
    seq_scans: tuple[str, ...]  # tables read by a sequential scan

    @property
    def on_index(self) -> bool:
        return "dialog_messages" not in self.seq_scans and any(
            "dialog_messages_pkey" in s for s in self.index_scans
        )


@dataclass(frozen=True)
class ReconcileStage:
    messages: int  # rows in dialog_messages
    window_visitor_messages: int  # visitor messages in the lookback window
    first_id_ms: float  # first_id_since: the lookback's first message, by binary search over ids
    scan_ms: float  # one batch of the scan statement (database time, rows fetched), median
    scan_rows: int
    scan_call_ms: float  # snapshot.scan_visitor_messages, the same batch with its parsing, median
    reconcile_ms: float  # a whole reconcile() run from no watermark (the worst case: after a Redis flush)
    reconcile_scanned: int
    reconcile_scheduled: int
    plan: Plan
    seq_scan_ms: float | None  # the same statement with index scans forbidden (the baseline), median


@dataclass(frozen=True)
class ReconcileResult:
    server: str
    dialogs: int
    small: ReconcileStage
    large: ReconcileStage


# ---------------------------------------------------------------------------------------------- database


def create_database(admin_url: str, name: str) -> str:
    """A fresh database `name` on the server of `admin_url`; returns its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from notifier.db import normalize_url

    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return make_url(normalize_url(admin_url)).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine

    from notifier.db import normalize_url

    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def create_schema(engine: Engine) -> None:
    from examples.replyx_host.schema import metadata
    from notifier.migrate import upgrade

    metadata.create_all(engine)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO users (id, email, role, status) "
            "SELECT g, 'owner' || g || '@example.com', 'user', 'active' FROM generate_series(1, :n) g"), {"n": TENANTS})
        # One dialog in eight is in handoff: the reconciler passes over the others (the AI answers them).
        conn.execute(text(
            "INSERT INTO dialogs (id, user_id, guest_id, handoff_status, is_taken_over, started_at) "
            "SELECT g, 1 + g % :tenants, 'g' || g, CASE WHEN g % 8 = 6 THEN 'requested' ELSE 'none' END, 0, "
            "now() AT TIME ZONE 'UTC' - interval '60 days' FROM generate_series(1, :n) g"),
            {"tenants": TENANTS, "n": DIALOGS})  # fmt: skip


def insert_messages(engine: Engine, first: int, last: int, total: int, end: dt.datetime, step_s: float) -> None:
    """Messages `first`..`last` of `total`, one every `step_s` seconds up to `end` (naive UTC, as the host
    writes), spread over the dialogs, four in seven of them the visitor's; then a finished check covering every
    dialog's messages older than UNCOVERED_S, and fresh planner statistics."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO dialog_messages (id, dialog_id, sender, text, timestamp, message_kind) "
            "SELECT g, 1 + (g::bigint * 7919) % :dialogs, "
            "(ARRAY['user', 'assistant', 'user', 'manager'])[1 + g % 7 % 4], 'text', "
            ":end - make_interval(secs => (:total - g) * :step), 'text' FROM generate_series(:first, :last) g"),
            {"dialogs": DIALOGS, "total": total, "step": step_s, "end": end, "first": first, "last": last})  # fmt: skip
        conn.execute(text(
            "INSERT INTO notifier_dialog_checks (dialog_id, covered_up_to, checked_at) "
            "SELECT dialog_id, max(id), :at FROM dialog_messages WHERE timestamp < :cut GROUP BY dialog_id "
            "ON CONFLICT (dialog_id) DO UPDATE SET covered_up_to = excluded.covered_up_to"),
            {"at": time.time(), "cut": end - dt.timedelta(seconds=UNCOVERED_S)})  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


# ---------------------------------------------------------------------------------------------- measuring


def parse_plan(lines: list[str]) -> Plan:
    index_scans, seq_scans = [], []
    for line in lines:
        body = line.strip().removeprefix("->").strip()
        if body.startswith(("Index Scan using", "Index Only Scan using")):
            index_scans.append(body.split("  (")[0])
        elif body.startswith("Seq Scan on"):
            seq_scans.append(body.removeprefix("Seq Scan on").split()[0])
    return Plan("\n".join(lines), tuple(index_scans), tuple(seq_scans))


@dataclass
class Stage:
    """One database of the phase and the timings taken on it so far."""

    engine: Engine
    rt: Any  # a Runtime on this database (and the phase's Redis DB)
    messages: int
    floor: int = 0
    statement: str = ""
    parameters: Any = None
    window: int = 0
    plan: Plan | None = None
    scan_rows: int = 0
    reconciled: tuple[int, int] = (0, 0)  # the last reconcile() run: rows scanned, dialogs scheduled
    timings: dict[str, list[float]] = field(default_factory=dict)

    def timed(self, name: str, started: float) -> None:
        self.timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)

    def median(self, name: str) -> float | None:
        got = self.timings.get(name)
        return round(statistics.median(got), 2) if got else None


def prepare(stage: Stage, now: float) -> None:
    """The lookback's first id, the scan statement as the reconciler sends it, and its plan."""
    from notifier import snapshot
    from notifier.snapshot.hosttime import MOSCOW_OFFSET

    lookback = stage.rt.settings.reconcile_lookback_hours * 3600
    with stage.engine.connect() as conn:
        stage.floor = snapshot.first_id_since(conn, now - lookback - MOSCOW_OFFSET, now)
        stage.window = int(conn.execute(text("SELECT count(*) FROM dialog_messages WHERE id > :f AND sender = 'user'"),
                                        {"f": stage.floor}).scalar_one())  # fmt: skip
        with captured_statements(conn) as seen:
            snapshot.scan_visitor_messages(conn, stage.floor, BATCH, now)
        stage.statement, stage.parameters = seen[-1]
        lines = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + stage.statement, stage.parameters)]
        stage.plan = parse_plan(lines)


def time_queries(stage: Stage, now: float) -> None:
    """One round of the reconciler's reads on this stage: first-id search, scan statement, scan call."""
    from notifier import snapshot
    from notifier.snapshot.hosttime import MOSCOW_OFFSET

    lookback = stage.rt.settings.reconcile_lookback_hours * 3600
    with stage.engine.connect() as conn:
        t0 = time.perf_counter()
        snapshot.first_id_since(conn, now - lookback - MOSCOW_OFFSET, now)
        stage.timed("first_id", t0)
        t0 = time.perf_counter()
        rows = conn.exec_driver_sql(stage.statement, stage.parameters).fetchall()
        stage.timed("scan", t0)
        stage.scan_rows = len(rows)
        t0 = time.perf_counter()
        snapshot.scan_visitor_messages(conn, stage.floor, BATCH, now)
        stage.timed("scan_call", t0)


def time_without_indexes(stage: Stage) -> None:
    """The baseline: the same statement with index scans forbidden (a sequential scan plan)."""
    with stage.engine.connect() as conn, conn.begin():
        for setting in INDEX_SCANS_OFF:
            conn.exec_driver_sql(f"SET LOCAL {setting} = off")
        t0 = time.perf_counter()
        conn.exec_driver_sql(stage.statement, stage.parameters).fetchall()
        stage.timed("no_index", t0)


def time_reconcile(stage: Stage, now: float) -> None:
    """A whole reconcile() run with no watermark (the worst case: after a Redis flush)."""
    from notifier.reconcile import reconcile

    stage.rt.store.r.flushdb()
    t0 = time.perf_counter()
    result = reconcile(stage.rt, now)
    stage.timed("reconcile", t0)
    stage.rt.store.r.flushdb()
    stage.reconciled = (result.scanned, len(result.scheduled))


def interleaved(stages: list[Stage], rounds: int, step: Callable[[Stage], None]) -> None:
    """`step(stage)` on every stage, `rounds` times, the order alternating: drift on a shared machine
    (neighbours, autovacuum, CPU frequency) reaches both stages alike."""
    for i in range(rounds):
        for stage in stages[i % 2 :] + stages[: i % 2]:
            step(stage)


def stage_result(stage: Stage) -> ReconcileStage:
    assert stage.plan is not None
    return ReconcileStage(
        messages=stage.messages, window_visitor_messages=stage.window,
        first_id_ms=stage.median("first_id") or 0.0, scan_ms=stage.median("scan") or 0.0,
        scan_rows=stage.scan_rows, scan_call_ms=stage.median("scan_call") or 0.0,
        reconcile_ms=stage.median("reconcile") or 0.0, reconcile_scanned=stage.reconciled[0],
        reconcile_scheduled=stage.reconciled[1],
        plan=stage.plan, seq_scan_ms=stage.median("no_index"),
    )


def build_stage(admin_url: str, name: str, redis_url: str, total: int, window: int, end: dt.datetime) -> Stage:
    """A database with the newest `window` of `total` messages, or all of them (window == total)."""
    from notifier.config import load_settings
    from notifier.db import create
    from notifier.redis_conn import client_for
    from notifier.runtime import Runtime
    from notifier.store import Store

    url = create_database(admin_url, name)
    engine = create(url)
    settings = load_settings({"NOTIFIER_DATABASE_URL": url, "NOTIFIER_REDIS_URL": redis_url,
                              "NOTIFIER_ENVIRONMENT": "development"})  # fmt: skip
    create_schema(engine)
    insert_messages(engine, total - window + 1, total, total, end, 86400.0 / DAY_MESSAGES)
    return Stage(engine, Runtime(settings, engine, Store(client_for(redis_url, timeout=5.0))), window)


def measure_reconciler(admin_url: str, db_name: str, redis_url: str, total: int, keep: bool = False) -> ReconcileResult:
    """Two databases: the lookback window's messages alone (`<db_name>_window`), and `total` messages with
    the history behind the same window (`<db_name>`); timed in alternating rounds."""
    end = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=1)
    window = min(round(DAY_MESSAGES * WINDOW_HOURS / 24), total)
    names = (f"{db_name}_window", db_name)
    stages: list[Stage] = []
    try:
        stages.append(build_stage(admin_url, names[0], redis_url, total, window, end))
        stages.append(build_stage(admin_url, names[1], redis_url, total, total, end))
        with stages[1].engine.connect() as conn:
            server = str(conn.exec_driver_sql("SHOW server_version").scalar_one())
        now = time.time()
        for stage in stages:
            prepare(stage, now)
        interleaved(stages, 1, lambda st: time_queries(st, now))  # warm-up: caches, plans
        for stage in stages:
            stage.timings.clear()
        interleaved(stages, REPEATS, lambda st: time_queries(st, now))
        interleaved(stages, 3, time_without_indexes)
        interleaved(stages, 3, lambda st: time_reconcile(st, now))
        return ReconcileResult(server, DIALOGS, stage_result(stages[0]), stage_result(stages[1]))
    finally:
        for stage in stages:
            stage.rt.store.r.close()
            stage.engine.dispose()
        if not keep:
            for name in names:
                drop_database(admin_url, name)
