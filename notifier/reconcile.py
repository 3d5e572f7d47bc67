"""The reconciler: finds visitor messages the fast path lost, and schedules them.

It is what makes a lost `schedule_fallback` call, a Redis flush or a killed worker harmless. Every run
reads at most `batch` rows of `dialog_messages` by primary key, from a watermark kept in Redis:

    SELECT m.id, m.dialog_id, m.timestamp, d.handoff_status, d.is_taken_over, d.ended_at, c.covered_up_to
    FROM dialog_messages m JOIN dialogs d ON d.id = m.dialog_id
    LEFT JOIN notifier_dialog_checks c ON c.dialog_id = m.dialog_id
    WHERE m.id > :watermark AND m.sender = 'user' ORDER BY m.id LIMIT :batch

a range scan on the primary key of `dialog_messages` plus primary-key lookups of `dialogs` and of our
`notifier_dialog_checks`; no index on `timestamp` is needed. The watermark advances past messages that
need nothing (the decision's own rules: AI handling, dialog ended before the message; or already covered
by a finished check) and stops at the first one still waiting for its deadline. Without a watermark (first
run, Redis flushed) it starts at the first message of the last `reconcile_lookback_hours`, found by a
binary search over ids (about 25 primary-key lookups), since the host keeps no index on `timestamp`.
Parked dialogs (their check kept failing) are left alone until a new message schedules them again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from notifier import snapshot
from notifier.decide import DialogFacts, dialog_reason
from notifier.runtime import Runtime
from notifier.snapshot.hosttime import MOSCOW_OFFSET

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileResult:
    scanned: int
    scheduled: tuple[tuple[int, int], ...]  # (dialog_id, message_id)
    watermark: int


def _settled(m: snapshot.ScannedMessage, skip_ai_handled: bool) -> bool:
    """Nothing can come of this message: the decision's own rules say so, or a finished check covered it."""
    facts = DialogFacts(
        id=m.dialog_id, owner_id=0, handoff_status=m.handoff_status, is_taken_over=m.is_taken_over,
        ended_at=m.ended_at, last_visitor_at=m.at,
    )
    return dialog_reason(facts, skip_ai_handled) is not None or (m.covered_up_to is not None and m.covered_up_to >= m.id)


def reconcile(rt: Runtime, now: float | None = None, batch: int = 5000, max_batches: int = 10) -> ReconcileResult:
    now = time.time() if now is None else now
    settings = rt.settings
    due_age = settings.grace_seconds + settings.reconcile_margin_seconds
    stored = rt.store.watermark()
    rows: list[snapshot.ScannedMessage] = []
    with rt.engine.connect() as conn:
        # Lookback bounds the scan even when the stored watermark is ancient.
        floor = snapshot.first_id_since(conn, now - settings.reconcile_lookback_hours * 3600 - MOSCOW_OFFSET, now)
        watermark = max(stored, floor) if stored is not None else floor
        cursor = watermark
        # Several batches a run, so one message held back (waiting for its deadline) cannot hide newer ones.
        for _ in range(max_batches):
            chunk = snapshot.scan_visitor_messages(conn, cursor, batch, now)
            rows.extend(chunk)
            if len(chunk) < batch:
                break
            cursor = chunk[-1].id
    due: list[snapshot.ScannedMessage] = []
    advance = True
    new_watermark = watermark
    for m in rows:
        if not _settled(m, settings.ai_handling_skips):
            advance = False  # the watermark waits here until a finished check covers this message
            if now - m.at >= due_age:
                due.append(m)
        if advance:
            new_watermark = m.id
    live = rt.store.live_or_parked(sorted({m.dialog_id for m in due}))
    scheduled: list[tuple[int, int]] = []
    for m in due:
        if m.dialog_id in live:
            continue
        live.add(m.dialog_id)
        # Past its deadline, no final decision, no live check: the fast path lost it. Due now.
        rt.store.schedule(m.dialog_id, m.id, min(m.at, now - settings.grace_seconds), settings.grace_seconds)
        scheduled.append((m.dialog_id, m.id))
        log.info("reconcile dialog=%s message=%s reason=no_decision_past_deadline", m.dialog_id, m.id)
    if new_watermark != watermark or stored is None:
        rt.store.set_watermark(new_watermark)
    return ReconcileResult(len(rows), tuple(scheduled), new_watermark)
