"""The reconciler: finds visitor messages the fast path lost, and schedules them.

It is what makes a lost `schedule_fallback` call, a Redis flush or a killed worker harmless. Every run
reads at most `batch` rows of `dialog_messages` by primary key, from a watermark kept in Redis:

    SELECT m.id, m.dialog_id, m.timestamp, d.handoff_status, d.is_taken_over, d.ended_at, c.covered_up_to
    FROM dialog_messages m JOIN dialogs d ON d.id = m.dialog_id
    LEFT JOIN notifier_dialog_checks c ON c.dialog_id = m.dialog_id
    WHERE m.id > :watermark AND m.sender = 'user' ORDER BY m.id LIMIT :batch

a range scan on the primary key of `dialog_messages` plus primary-key lookups of `dialogs` and of our
`notifier_dialog_checks`; no index on `timestamp` is needed. The watermark advances past messages that
need nothing (AI handling, dialog ended, or already covered by a finished check) and stops at the first
one still waiting for its deadline. Without a watermark (first run, Redis flushed) it starts at the first
message of the last `reconcile_lookback_hours`, found by a binary search over ids (about 25 primary-key
lookups), since the host keeps no index on `timestamp`.

The host writes some timestamps as naive UTC and some in Moscow time (UTC+3). A naive timestamp that lies
in the future read as UTC is taken as Moscow time; so a message is never judged older than it is, and a
Moscow-time message at most `grace + margin` late.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, func, inspect, select

from notifier import host, models
from notifier.decide import HANDOFF_NEEDS_HUMAN
from notifier.redis_store import INFLIGHT, PENDING, PREFIX
from notifier.runtime import Runtime

log = logging.getLogger(__name__)

WATERMARK = PREFIX + "reconcile:watermark"
MOSCOW_OFFSET = 3 * 3600.0
FUTURE_TOLERANCE = 120.0


def message_time(ts: dt.datetime | None, now: float) -> float:
    """Epoch seconds of a host timestamp; a naive one is UTC unless that puts it in the future (then MSK)."""
    if ts is None:
        return now
    if ts.tzinfo is not None:
        return ts.timestamp()
    as_utc = ts.replace(tzinfo=dt.UTC).timestamp()
    return as_utc - MOSCOW_OFFSET if as_utc > now + FUTURE_TOLERANCE else as_utc


@dataclass(frozen=True)
class ReconcileResult:
    scanned: int
    scheduled: tuple[tuple[int, int], ...]  # (dialog_id, message_id)
    watermark: int


def _first_id_since(conn: Connection, cutoff: float, now: float) -> int:
    """Largest id whose message is older than `cutoff`, by binary search over ids (ids grow with time)."""
    m = host.dialog_messages
    lo, hi = conn.execute(select(func.min(m.c.id), func.max(m.c.id))).one()
    if lo is None:
        return 0
    lo, hi = int(lo) - 1, int(hi)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute(select(m.c.id, m.c.timestamp).where(m.c.id >= mid).order_by(m.c.id).limit(1)).one()
        if message_time(row.timestamp, now) < cutoff:
            lo = max(mid, int(row.id))
        else:
            hi = mid - 1
    return lo


def host_tables_missing(engine: Engine) -> list[str]:
    """Host tables the worker reads that this database lacks (a fresh SQLite default has none)."""
    present = set(inspect(engine).get_table_names())
    return [t for t in ("users", "dialogs", "dialog_messages") if t not in present]


def _scan(conn: Connection, after: int, batch: int) -> list[Any]:
    m, d, c = host.dialog_messages, host.dialogs, models.dialog_checks
    return list(
        conn.execute(
            select(m.c.id, m.c.dialog_id, m.c.timestamp, d.c.handoff_status, d.c.is_taken_over, d.c.ended_at,
                   c.c.covered_up_to)
            .select_from(m.join(d, d.c.id == m.c.dialog_id).outerjoin(c, c.c.dialog_id == m.c.dialog_id))
            .where(m.c.id > after, m.c.sender == "user")
            .order_by(m.c.id)
            .limit(batch)
        ).all()
    )


def _in_flight(rt: Runtime, dialog_ids: list[int]) -> set[int]:
    """Dialogs with a live pending or inflight check: their decision is coming, nothing to schedule."""
    if not dialog_ids:
        return set()
    members = [str(i) for i in dialog_ids]
    pipe = rt.store.r.pipeline(transaction=False)
    pipe.zmscore(PENDING, members)
    pipe.zmscore(INFLIGHT, members)
    pending, inflight = pipe.execute()
    return {i for i, p, f in zip(dialog_ids, pending, inflight, strict=True) if p is not None or f is not None}


def reconcile(rt: Runtime, now: float | None = None, batch: int = 5000, max_batches: int = 10) -> ReconcileResult:
    now = time.time() if now is None else now
    settings = rt.settings
    due_age = settings.grace_seconds + settings.reconcile_margin_seconds
    raw = cast(str | None, rt.store.r.get(WATERMARK))
    with rt.engine.connect() as conn:
        # Lookback bounds the scan even when the stored watermark is ancient.
        floor = _first_id_since(conn, now - settings.reconcile_lookback_hours * 3600 - MOSCOW_OFFSET, now)
        watermark = max(int(raw), floor) if raw is not None else floor
        rows: list[Any] = []
        cursor = watermark
        # Several batches a run, so one message held back (waiting for its deadline) cannot hide newer ones.
        for _ in range(max_batches):
            chunk = _scan(conn, cursor, batch)
            rows.extend(chunk)
            if len(chunk) < batch:
                break
            cursor = chunk[-1].id
    due: list[Any] = []
    advance = True
    new_watermark = watermark
    for r in rows:
        needs_human = bool(r.is_taken_over) or (r.handoff_status or "none") in HANDOFF_NEEDS_HUMAN
        settled = (
            r.ended_at is not None
            or (settings.ai_handling_skips and not needs_human)
            or (r.covered_up_to is not None and r.covered_up_to >= r.id)
        )
        if not settled:
            advance = False  # the watermark waits here until a finished check covers this message
            if now - message_time(r.timestamp, now) >= due_age:
                due.append(r)
        if advance:
            new_watermark = r.id
    live = _in_flight(rt, sorted({r.dialog_id for r in due}))
    scheduled: list[tuple[int, int]] = []
    seen: set[int] = set()
    for r in due:
        if r.dialog_id in live or r.dialog_id in seen:
            continue
        seen.add(r.dialog_id)
        # Past its deadline, no final decision, no live check: the fast path lost it. Due now.
        seen_at = min(message_time(r.timestamp, now), now - settings.grace_seconds)
        rt.store.schedule(r.dialog_id, r.id, seen_at, settings.grace_seconds)
        scheduled.append((r.dialog_id, r.id))
        log.info("reconcile dialog=%s message=%s reason=no_decision_past_deadline", r.dialog_id, r.id)
    if new_watermark != watermark or raw is None:
        rt.store.r.set(WATERMARK, new_watermark)
    return ReconcileResult(len(rows), tuple(scheduled), new_watermark)
