"""A due check for one dialog: load, decide (pure), record every decision, claim deliveries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from notifier import ledger, models, snapshot
from notifier.decide import CheckInput, Decision, decide
from notifier.enums import Action, Channel, Reason
from notifier.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    decisions: tuple[Decision, ...]
    delivery_ids: tuple[int, ...]
    recheck_at: float | None


def log_decision(dialog_id: int, x: Decision) -> None:
    log.info(
        "decision dialog=%s manager=%s channel=%s action=%s reason=%s messages=%s..%s",
        dialog_id, x.manager_id, x.channel.value if x.channel else "-", x.action.value, x.reason.value,
        x.first_message_id, x.last_message_id,
    )


def run_check(rt: Runtime, dialog_id: int, now: float | None = None) -> CheckResult:
    now = time.time() if now is None else now
    settings = rt.settings
    seen = rt.store.seen_times(dialog_id)
    with rt.engine.connect() as conn:
        dialog = snapshot.load_dialog(conn, dialog_id)
        if dialog is None:
            decisions: tuple[Decision, ...] = (Decision(None, Action.SKIP, Reason.NO_DIALOG),)
            inp = None
        else:
            candidates, refused = snapshot.resolve(conn, dialog)
            online = rt.store.online_on_dialog([c.person.id for c in candidates], dialog_id, now)
            states = snapshot.load_recipient_states(conn, dialog_id, candidates, online, rt.push_enabled)
            last_manager, visitor_ids = snapshot.load_message_ids(conn, dialog_id)
            inp = CheckInput(
                dialog=dialog.facts,
                visitor_message_ids=visitor_ids,
                last_manager_message_id=last_manager,
                recipients=states,
                refused=refused,
                now=now,
                seen_at=seen,
                # A message never scheduled (lost, or written while the AI was handling): its deadline is now.
                unseen_at=now - settings.grace_seconds,
                grace_seconds=settings.grace_seconds,
                email_after_seconds=settings.email_after_seconds,
                skip_ai_handled=settings.ai_handling_skips,
            )
    recheck_at = None
    if inp is not None:
        outcome = decide(inp)
        decisions, recheck_at = outcome.decisions, outcome.recheck_at
    created: list[int] = []
    with rt.engine.begin() as conn:
        ledger.record_decisions(conn, dialog_id, decisions, now)
        for x in decisions:
            if x.action is not Action.NOTIFY:
                continue
            targets = [""]
            if x.channel is Channel.WEBPUSH:
                ps = models.push_subscriptions
                subs = conn.execute(select(ps.c.id).where(ps.c.manager_id == x.manager_id).order_by(ps.c.id))
                targets = [str(i) for i in subs.scalars()]
            created.extend(ledger.claim_new(conn, dialog_id, x, targets, now))
        if inp is not None and recheck_at is None and inp.visitor_message_ids:
            ledger.mark_covered(conn, dialog_id, inp.visitor_message_ids[-1], now)
    for x in decisions:
        log_decision(dialog_id, x)
    return CheckResult(decisions, tuple(created), recheck_at)


DISPATCH_BATCH = 1000
# Due checks travel to Celery in chunks: one message per chunk keeps the dispatcher fast under a backlog.
CHECK_CHUNK = 50


def check_and_enqueue(
    rt: Runtime, dialog_id: int, enqueue: Callable[[int], object], now: float | None = None
) -> CheckResult:
    """Run a check, hand its new deliveries to `enqueue`, then release the dialog (or set its recheck).

    The release comes last: a crash before it leaves the inflight lease to expire, and the check runs
    again, harmlessly, against the same ledger keys.
    """
    result = run_check(rt, dialog_id, now)
    for delivery_id in result.delivery_ids:
        enqueue(delivery_id)
    rt.store.finish(dialog_id, result.recheck_at)
    return result


def dispatch(
    rt: Runtime,
    enqueue_checks: Callable[[list[int]], object],
    enqueue_delivery: Callable[[int], object],
    now: float | None = None,
    max_batches: int = 100,
) -> int:
    """Move due checks to the queue (atomically in Redis) and re-enqueue deliveries whose worker vanished."""
    now = time.time() if now is None else now
    moved = 0
    for _ in range(max_batches):
        due = rt.store.dispatch(now, DISPATCH_BATCH, rt.settings.check_lease_seconds)
        for i in range(0, len(due), CHECK_CHUNK):
            enqueue_checks(due[i : i + CHECK_CHUNK])
        moved += len(due)
        if len(due) < DISPATCH_BATCH:
            break
    for delivery_id in ledger.requeue_stale(rt.engine, now):
        enqueue_delivery(delivery_id)
    return moved
