"""Deliveries (recipient x channel x target), one or several side by side: claim, decide again, render,
send, record.

Every claim is an attempt, and every exception after it counts: errors that cannot succeed on a retry
(a permanent refusal, a malformed or unencodable address, a template error, a bug) fail the delivery at
once; transient ones (the server said "later", a timeout, a network or database outage) retry with backoff
until NOTIFIER_MAX_ATTEMPTS, then fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from notifier import ledger, metrics, snapshot
from notifier.channels.base import DeliveryResult, EmailTarget, PushTarget
from notifier.channels.email import message_id_for
from notifier.check import Gathered, gather_many, log_decision
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


Send = Callable[[], DeliveryResult]
SendAll = Callable[[list[Send]], list["DeliveryResult | Exception"]]


def send_one_by_one(sends: list[Send]) -> list[DeliveryResult | Exception]:
    """Each send in turn, on this thread: a single delivery, or no lanes (`notifier.sending` sends at once)."""
    results: list[DeliveryResult | Exception] = []
    for send in sends:
        try:
            results.append(send())
        except Exception as exc:  # noqa: BLE001 - handed back to its own delivery
            results.append(exc)
    return results


@dataclass(frozen=True)
class _Ready:
    """A delivery decided (again) and rendered, its send still to happen."""

    row: ledger.DeliveryRow
    decision: Decision
    send: Send


Prepared = tuple[ledger.DeliveryRow, _Ready | DeliveryOutcome | Exception]


def run_delivery(rt: Runtime, delivery_id: int, now: float | None = None) -> DeliveryOutcome:
    return run_deliveries(rt, [delivery_id], now)[delivery_id]


def run_deliveries(rt: Runtime, delivery_ids: list[int], now: float | None = None,
                   send_all: SendAll = send_one_by_one) -> dict[int, DeliveryOutcome]:
    """Deliveries side by side, each exactly as if alone: claimed (one more attempt each), decided again on
    facts read just now, rendered, sent, recorded. The claims and the reads are shared (one statement per
    kind of fact for all of them); `send_all` sends the ready ones (at once, on the lanes) right after."""
    now = time.time() if now is None else now
    rows = ledger.claim_many(rt.engine, delivery_ids, now, rt.settings.send_lease_seconds, rt.settings.max_attempts)
    out = {i: DeliveryOutcome(None, reason="not claimable") for i in delivery_ids if i not in rows}
    ready: list[_Ready] = []
    for row, prepared in _prepare_all(rt, list(rows.values()), now):
        if isinstance(prepared, _Ready):
            ready.append(prepared)
        elif isinstance(prepared, DeliveryOutcome):
            out[row.id] = prepared
        else:
            out[row.id] = _attempt_failed(rt, row, prepared, now)
    results = send_all([r.send for r in ready])
    sent = [(item, result) for item, result in zip(ready, results, strict=True) if isinstance(result, DeliveryResult)]
    # The sent ones in one transaction: if it fails (an outage), their leases run out and the sweeper takes
    # them, as for a worker that died right after sending.
    ledger.mark_sent_many(rt.engine, [(item.row.id, result.ref) for item, result in sent], now)
    for item, _result in sent:
        metrics.observe_lateness(item.row.channel, now, item.row.due_at)
        _log(item.row, "sent", item.decision.reason.value)
        out[item.row.id] = DeliveryOutcome(DeliveryStatus.SENT)
    first_error: Exception | None = None
    for item, result in zip(ready, results, strict=True):
        if isinstance(result, DeliveryResult):
            continue
        try:  # every failure recorded that can be: an outage on one must not leave the others unrecorded
            out[item.row.id] = _attempt_failed(rt, item.row, result, now)
        except Exception as exc:  # noqa: BLE001 - raised below, after the others
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return out


def _attempt_failed(rt: Runtime, row: ledger.DeliveryRow, exc: Exception, now: float) -> DeliveryOutcome:
    if isinstance(exc, SubscriptionGone):
        ledger.mark_failed(rt.engine, row.id, now, FailReason.SUBSCRIPTION_GONE, str(exc), delete_subscription=int(row.target))
        _log(row, "failed", FailReason.SUBSCRIPTION_GONE.value)
        return DeliveryOutcome(DeliveryStatus.FAILED, reason=str(exc))
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



def _prepare_all(rt: Runtime, rows: list[ledger.DeliveryRow], now: float) -> list[Prepared]:
    """Decide every claimed row again and render the ones that go. One shared read for all; if it fails,
    each row reads alone, so that one row's bad data costs only that row its attempt."""
    if not rows:
        return []
    try:
        return _prepare(rt, rows, now)
    except Exception as exc:
        if len(rows) == 1:
            return [(rows[0], exc)]
        log.warning("delivery batch of %d read alone error=%s", len(rows), describe(exc))
    out: list[Prepared] = []
    for row in rows:
        try:
            out += _prepare(rt, [row], now)
        except Exception as exc:  # noqa: BLE001 - this row's attempt failed; counted by the caller
            out.append((row, exc))
    return out


def _prepare(rt: Runtime, rows: list[ledger.DeliveryRow], now: float) -> list[Prepared]:
    # One connection for every read; given back before anything goes over the network.
    with snapshot.reading(rt.engine) as conn:
        subscriptions = snapshot.load_subscriptions(conn, [int(r.target) for r in rows if r.channel is Channel.WEBPUSH])
        facts = gather_many(rt, sorted({r.dialog_id for r in rows}), now, conn)
        decided: list[tuple[ledger.DeliveryRow, Decision]] = []
        for row in rows:
            gathered = facts[row.dialog_id]
            subscription = subscriptions.get(int(row.target)) if row.channel is Channel.WEBPUSH else None
            if gathered is None:
                decision = Decision(row.manager_id, Action.SKIP, Reason.NO_DIALOG, row.channel, row.burst_floor)
            else:
                owner = subscription.manager_id if subscription is not None else None
                decision = decide_delivery(gathered[1], PendingDelivery(row.manager_id, row.channel, row.burst_floor, owner))
            decided.append((row, decision))
        # The messages each mail or push shows, for those that go: one statement for the whole group.
        shown = snapshot.load_shown_many(conn, [
            (row.dialog_id, decision.burst_floor) for row, decision in decided
            if decision.action not in (Action.SKIP, Action.HOLD) and facts[row.dialog_id] is not None
        ], MAX_SHOWN)
    out: list[Prepared] = []
    for row, decision in decided:
        try:
            subscription = subscriptions.get(int(row.target)) if row.channel is Channel.WEBPUSH else None
            mine = shown.get((row.dialog_id, decision.burst_floor), ())
            out.append((row, _settle(rt, row, decision, facts[row.dialog_id], subscription, mine, now)))
        except Exception as exc:  # noqa: BLE001 - a template error, a bad address: this row only
            out.append((row, exc))
    return out


def _settle(rt: Runtime, row: ledger.DeliveryRow, decision: Decision, gathered: Gathered,
            subscription: snapshot.Subscription | None, shown: tuple[tuple[int, str], ...],
            now: float) -> _Ready | DeliveryOutcome:
    """What the decision means for this row: held, skipped (both recorded now), or ready to send."""
    settings = rt.settings
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
        rendered_email, email_sender = rt.renderer().email(ctx), rt.email_sender()
        return _Ready(row, decision, lambda: email_sender.send(target, rendered_email))
    assert subscription is not None  # decide_delivery said subscription_gone otherwise
    push = PushTarget(subscription.id, subscription.endpoint, subscription.p256dh, subscription.auth)
    rendered_push, push_sender = rt.renderer().push(ctx), rt.push_sender()
    return _Ready(row, decision, lambda: push_sender.send(push, rendered_push))
