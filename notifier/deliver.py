"""One delivery (recipient x channel x target): claim, decide again, render, send, record.

Every claim is an attempt, and every exception after it counts: errors that cannot succeed on a retry
(a permanent refusal, a malformed or unencodable address, a template error, a bug) fail the delivery at
once; transient ones (the server said "later", a timeout, a network or database outage) retry with backoff
until NOTIFIER_MAX_ATTEMPTS, then fail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from notifier import ledger, metrics, snapshot
from notifier.channels.base import EmailTarget, PushTarget
from notifier.channels.email import message_id_for
from notifier.check import gather_many, log_decision
from notifier.decide import Decision, PendingDelivery, decide_delivery, recipients_changed
from notifier.enums import Action, Channel, DeliveryStatus, FailReason, Reason
from notifier.errors import PermanentError, SubscriptionGone, TransientError, Unavailable
from notifier.outages import is_outage
from notifier.render import MAX_SHOWN, MessageView, RenderContext
from notifier.retry import backoff, describe
from notifier.runtime import Runtime
from notifier.unsubscribe import unsubscribe_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus | None  # None: not ours to send (done, not due, held elsewhere, out of attempts)
    retry_in: float | None = None
    reason: str = ""


def _log(row: ledger.DeliveryRow, outcome: str, reason: str) -> None:
    log.info(
        "delivery id=%s dialog=%s manager=%s channel=%s outcome=%s reason=%s attempt=%s",
        row.id, row.dialog_id, row.manager_id, row.channel.value, outcome, reason, row.attempts,
    )
    metrics.count_delivery(row.channel, outcome)


def is_transient(exc: BaseException) -> bool:
    """Could the same attempt succeed later? Server deferrals, timeouts, network and service outages."""
    return isinstance(exc, (TransientError, Unavailable, OSError)) or is_outage(exc)


def run_delivery(rt: Runtime, delivery_id: int, now: float | None = None) -> DeliveryOutcome:
    now = time.time() if now is None else now
    row = ledger.claim(rt.engine, delivery_id, now, rt.settings.send_lease_seconds, rt.settings.max_attempts)
    if row is None:
        return DeliveryOutcome(None, reason="not claimable")
    try:
        return _attempt(rt, row, now)
    except SubscriptionGone as exc:
        ledger.mark_failed(rt.engine, row.id, now, FailReason.SUBSCRIPTION_GONE, str(exc), delete_subscription=int(row.target))
        _log(row, "failed", FailReason.SUBSCRIPTION_GONE.value)
        return DeliveryOutcome(DeliveryStatus.FAILED, reason=str(exc))
    except Exception as exc:
        return _failed_attempt(rt, row, exc, now)


def _failed_attempt(rt: Runtime, row: ledger.DeliveryRow, exc: Exception, now: float) -> DeliveryOutcome:
    error = str(exc) if isinstance(exc, (TransientError, PermanentError)) else describe(exc)
    if not is_transient(exc):
        if not isinstance(exc, PermanentError):
            debug = log.isEnabledFor(logging.DEBUG)  # the traceback only when asked for
            log.error("delivery id=%s cannot succeed on a retry error=%s", row.id, describe(exc), exc_info=debug)
        ledger.mark_failed(rt.engine, row.id, now, FailReason.PERMANENT_ERROR, error)
        _log(row, "failed", FailReason.PERMANENT_ERROR.value)
        return DeliveryOutcome(DeliveryStatus.FAILED, reason=error)
    if row.attempts >= rt.settings.max_attempts:
        gave_up = f"gave up after {row.attempts} attempts: {error}"
        ledger.mark_failed(rt.engine, row.id, now, FailReason.ATTEMPTS_EXHAUSTED, gave_up)
        _log(row, "failed", FailReason.ATTEMPTS_EXHAUSTED.value)
        return DeliveryOutcome(DeliveryStatus.FAILED, reason=error)
    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
    wait = backoff(row.attempts, retry_after, rt.settings.retry_base_seconds)
    ledger.mark_retry(rt.engine, row.id, now, wait, error)
    _log(row, "retry", f"transient_error retry_in={wait:.1f}s")
    return DeliveryOutcome(DeliveryStatus.PENDING, retry_in=wait, reason=error)


def _attempt(rt: Runtime, row: ledger.DeliveryRow, now: float) -> DeliveryOutcome:
    settings = rt.settings
    subscription = None
    # One connection for every read of this attempt; given back before anything goes over the network.
    with rt.engine.connect() as conn:
        if row.channel is Channel.WEBPUSH:
            subscription = snapshot.load_subscription(conn, int(row.target))
        gathered = gather_many(rt, [row.dialog_id], now, conn)[row.dialog_id]
        if gathered is None:
            decision = Decision(row.manager_id, Action.SKIP, Reason.NO_DIALOG, row.channel, row.burst_floor)
        else:
            owner = subscription.manager_id if subscription is not None else None
            decision = decide_delivery(gathered[1], PendingDelivery(row.manager_id, row.channel, row.burst_floor, owner))
        shown: tuple[tuple[int, str], ...] = ()
        if decision.action not in (Action.SKIP, Action.HOLD) and gathered is not None:
            shown = snapshot.load_shown(conn, row.dialog_id, decision.burst_floor, MAX_SHOWN)
    if decision.action is Action.HOLD and decision.due_at is not None:
        # Quiet hours began while it waited: not now, and not an attempt; back in line for when they end.
        ledger.hold(rt.engine, row.id, now, decision.due_at)
        log_decision(row.dialog_id, decision, at="send")
        _log(row, "held", decision.reason.value)
        return DeliveryOutcome(DeliveryStatus.PENDING, retry_in=decision.due_at - now, reason=decision.reason.value)
    if decision.action is Action.SKIP or gathered is None:
        ledger.mark_skipped(rt.engine, row, decision, now)
        log_decision(row.dialog_id, decision, at="send")
        _log(row, "skipped", decision.reason.value)
        if gathered is not None and recipients_changed(decision):
            newest = gathered[1].messages.last_visitor_id
            rt.store.schedule(row.dialog_id, newest, now - settings.grace_seconds, settings.grace_seconds)
        return DeliveryOutcome(DeliveryStatus.SKIPPED, reason=decision.reason.value)
    snap, inp = gathered
    state = next(s for s in inp.recipients if s.candidate.person.id == row.manager_id)
    person = state.candidate.person
    unread = inp.messages.unread_above(decision.burst_floor)
    ctx = RenderContext(
        dialog_id=row.dialog_id,
        language=state.prefs.language,
        recipient_name=person.first_name,
        visitor_name=snap.visitor_name,
        site_name=snap.site_name,
        messages=tuple(MessageView(i, text) for i, text in shown),
        dialog_url=settings.dialog_link(row.dialog_id),
        total=unread.count if unread is not None else len(shown),
        relation=state.candidate.relation.value,
        settings_url=settings.settings_url,
        unsubscribe_url=unsubscribe_url(settings.public_url, settings.secret_key, row.manager_id, Channel.EMAIL, now),
    )
    if row.channel is Channel.EMAIL:
        assert person.email is not None  # decide_delivery said no_address otherwise
        message_id = message_id_for(row.id, row.dialog_id, settings)
        target = EmailTarget(person.email, person.first_name, message_id, ctx.unsubscribe_url)
        result = rt.email_sender().send(target, rt.renderer().email(ctx))
    else:
        assert subscription is not None  # decide_delivery said subscription_gone otherwise
        push = PushTarget(subscription.id, subscription.endpoint, subscription.p256dh, subscription.auth)
        result = rt.push_sender().send(push, rt.renderer().push(ctx))
    ledger.mark_sent(rt.engine, row.id, now, result.ref)
    metrics.observe_lateness(row.channel, now, row.due_at)
    _log(row, "sent", decision.reason.value)
    return DeliveryOutcome(DeliveryStatus.SENT)
