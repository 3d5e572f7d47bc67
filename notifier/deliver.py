"""One delivery (recipient x channel x target): claim, check again, render, send, record."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from notifier import ledger, models, snapshot
from notifier.channels.base import EmailTarget, PushTarget
from notifier.decide import blocking_reason
from notifier.enums import Channel, DeliveryStatus, Reason
from notifier.errors import PermanentError, SubscriptionGone, TransientError
from notifier.render import MessageView, RenderContext
from notifier.runtime import Runtime

log = logging.getLogger(__name__)

BACKOFF_CAP = 900.0


@dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus | None  # None: not ours to send (done, not due, or held elsewhere)
    retry_in: float | None = None
    reason: str = ""


def backoff(attempt: int, retry_after: float | None, base_seconds: float = 10.0, rng: random.Random | None = None) -> float:
    """Exponential with +-20% jitter, capped; a server's Retry-After wins when it asks for longer."""
    base = min(BACKOFF_CAP, base_seconds * 2 ** max(0, attempt - 1))
    jittered: float = base * (rng or random).uniform(0.8, 1.2)
    return min(3600.0, max(jittered, retry_after or 0.0))


def message_id_for(delivery_id: int, dialog_id: int, email_from: str) -> str:
    domain = email_from.rsplit("@", 1)[-1].strip(" >") or "localhost"
    return f"<notifier.{delivery_id}.d{dialog_id}@{domain}>"


def _log(row: ledger.DeliveryRow, outcome: str, reason: str) -> None:
    log.info(
        "delivery id=%s dialog=%s manager=%s channel=%s outcome=%s reason=%s attempt=%s",
        row.id, row.dialog_id, row.manager_id, row.channel.value, outcome, reason, row.attempts,
    )


def run_delivery(rt: Runtime, delivery_id: int, now: float | None = None) -> DeliveryOutcome:
    now = time.time() if now is None else now
    row = ledger.claim(rt.engine, delivery_id, now, rt.settings.send_lease_seconds)
    if row is None:
        return DeliveryOutcome(None, reason="not claimable")
    settings = rt.settings
    with rt.engine.connect() as conn:
        dialog = snapshot.load_dialog(conn, row.dialog_id)
        person = snapshot.load_people(conn, {row.manager_id}).get(row.manager_id)
        last_manager, visitor_ids = snapshot.load_message_ids(conn, row.dialog_id)
        rp = models.read_pointers
        pointer = conn.execute(
            select(rp.c.message_id).where(rp.c.dialog_id == row.dialog_id, rp.c.manager_id == row.manager_id)
        ).scalar_one_or_none() or 0
        reason: Reason | None = Reason.NO_DIALOG if dialog is None or person is None else None
        unread: tuple[int, ...] = ()
        if dialog is not None and person is not None:
            # Zulip's lesson: state changes during the grace period and retries, so look again now.
            reason, _floor, unread = blocking_reason(
                dialog.facts, person, visitor_ids, last_manager, pointer, settings.ai_handling_skips
            )
            if reason is None and rt.store.online_on_dialog([row.manager_id], row.dialog_id, now):
                reason = Reason.ONLINE
        texts = snapshot.load_texts(conn, list(unread)) if reason is None else {}
        sub = None
        if reason is None and row.channel is Channel.WEBPUSH:
            ps = models.push_subscriptions
            sub = conn.execute(select(ps).where(ps.c.id == int(row.target))).one_or_none()
    if reason is not None:
        ledger.mark_final(rt.engine, row.id, now, DeliveryStatus.CANCELLED, reason.value)
        _log(row, "cancelled", reason.value)
        return DeliveryOutcome(DeliveryStatus.CANCELLED, reason=reason.value)
    assert dialog is not None and person is not None
    ctx = RenderContext(
        dialog_id=row.dialog_id,
        language=person.language or settings.default_language,
        recipient_name=person.first_name,
        visitor_name=dialog.visitor_name,
        site_name=dialog.site_name,
        messages=tuple(MessageView(i, texts.get(i, "")) for i in unread),
        dialog_url=settings.dialog_link(row.dialog_id),
    )
    target: EmailTarget | PushTarget
    rendered: object
    if row.channel is Channel.EMAIL:
        if not person.email:
            ledger.mark_final(rt.engine, row.id, now, DeliveryStatus.CANCELLED, Reason.NO_ADDRESS.value)
            _log(row, "cancelled", Reason.NO_ADDRESS.value)
            return DeliveryOutcome(DeliveryStatus.CANCELLED, reason=Reason.NO_ADDRESS.value)
        target = EmailTarget(person.email, person.first_name, message_id_for(row.id, row.dialog_id, settings.email_from))
        rendered = rt.renderer().email(ctx)
    else:
        if sub is None:
            ledger.mark_final(rt.engine, row.id, now, DeliveryStatus.GONE, "subscription deleted")
            _log(row, "gone", "subscription_deleted")
            return DeliveryOutcome(DeliveryStatus.GONE, reason="subscription deleted")
        target = PushTarget(sub.id, sub.endpoint, sub.p256dh, sub.auth)
        rendered = rt.renderer().push(ctx)
    return _send(rt, row, target, rendered, now)


def _send(
    rt: Runtime, row: ledger.DeliveryRow, target: EmailTarget | PushTarget, rendered: object, now: float
) -> DeliveryOutcome:
    try:
        result = rt.sender(row.channel).send(target, rendered)
    except SubscriptionGone as exc:
        assert isinstance(target, PushTarget)
        with rt.engine.begin() as conn:
            ps = models.push_subscriptions
            conn.execute(delete(ps).where(ps.c.id == target.subscription_id))
        ledger.mark_final(rt.engine, row.id, now, DeliveryStatus.GONE, str(exc))
        _log(row, "gone", "subscription_gone")
        return DeliveryOutcome(DeliveryStatus.GONE, reason=str(exc))
    except PermanentError as exc:
        ledger.mark_final(rt.engine, row.id, now, DeliveryStatus.FAILED, str(exc))
        _log(row, "failed", "permanent_error")
        return DeliveryOutcome(DeliveryStatus.FAILED, reason=str(exc))
    except TransientError as exc:
        if row.attempts >= rt.settings.max_attempts:
            ledger.mark_final(rt.engine, row.id, now, DeliveryStatus.FAILED, f"gave up after {row.attempts} attempts: {exc}")
            _log(row, "failed", "retries_exhausted")
            return DeliveryOutcome(DeliveryStatus.FAILED, reason=str(exc))
        wait = backoff(row.attempts, exc.retry_after, rt.settings.retry_base_seconds)
        ledger.mark_retry(rt.engine, row.id, now, wait, str(exc))
        _log(row, "retry", f"transient_error retry_in={wait:.1f}s")
        return DeliveryOutcome(DeliveryStatus.PENDING, retry_in=wait, reason=str(exc))
    ledger.mark_sent(rt.engine, row.id, now, result.ref)
    _log(row, "sent", "unread")
    return DeliveryOutcome(DeliveryStatus.SENT)
