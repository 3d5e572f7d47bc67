"""Clear on read: take back a push notification once its manager has read the dialog or it was answered.

The host's `mark_read` asks for it (a Redis request the dispatcher hands to a task within a second); the
rule is `decide.clears_due`. A clear push carries the notification's tag and Topic, so a push service
still holding the notification for an offline browser replaces it with the clear, and the service worker
closes what is on the screen without showing anything. Best effort: one try per browser, logged.
"""

from __future__ import annotations

import logging
import time

from notifier import ledger, snapshot
from notifier.channels.base import PushTarget
from notifier.decide import clears_due
from notifier.errors import DeliveryError, SubscriptionGone
from notifier.render import RenderedClear
from notifier.retry import describe
from notifier.runtime import Runtime

log = logging.getLogger(__name__)


def run_clear(rt: Runtime, dialog_id: int, now: float | None = None) -> int:
    """Send the clear pushes due for one dialog; returns how many browsers were sent one."""
    now = time.time() if now is None else now
    if not rt.push_enabled:
        return 0
    with rt.engine.connect() as conn:
        notices, pointers, last_manager = snapshot.load_pushed(conn, dialog_id)
        due = clears_due(notices, pointers, last_manager)
        subscriptions = {n.subscription_id: snapshot.load_subscription(conn, n.subscription_id) for n in due}
    sent = 0
    for subscription_id, sub in subscriptions.items():
        owners = {n.manager_id for n in due if n.subscription_id == subscription_id}
        if sub is None or sub.manager_id not in owners:
            continue  # deleted, or the browser now belongs to someone else: not theirs to clear
        try:
            rt.push_sender().send(PushTarget(sub.id, sub.endpoint, sub.p256dh, sub.auth), RenderedClear(dialog_id))
            sent += 1
        except SubscriptionGone:
            ledger.delete_subscription_by_id(rt.engine, sub.id)
        except DeliveryError as exc:
            log.warning(
                "clear dialog=%s manager=%s channel=webpush outcome=failed error=%s", dialog_id, sub.manager_id, describe(exc)
            )
    ledger.mark_cleared(rt.engine, [n.delivery_id for n in due], now)
    for n in due:
        log.info("clear dialog=%s manager=%s channel=webpush reason=read_or_answered", dialog_id, n.manager_id)
    return sent
