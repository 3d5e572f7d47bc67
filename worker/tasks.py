"""Thin Celery tasks: parse ids, call one function in `notifier`, translate its outcome for Celery.

All are safe to run twice: checks land on the ledger's unique keys, deliveries are claimed before sending.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_process_shutdown
from sqlalchemy.exc import OperationalError

from notifier.check import CHECK_LEASE, check_and_enqueue, dispatch
from notifier.deliver import backoff, run_delivery
from notifier.enums import DeliveryStatus
from notifier.readstate import check_id
from notifier.runtime import get_runtime, set_runtime
from worker.celery_app import CHECK_TIME_LIMIT, DELIVERY_TIME_LIMIT, MAX_CELERY_COUNTDOWN, app

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """Raised after a delivery is recorded as failed, so Flower shows it as a failure."""


@app.task(name="notifier.check_dialog", bind=True, time_limit=CHECK_TIME_LIMIT, soft_time_limit=CHECK_TIME_LIMIT - 10)
def check_dialog(self: Task, dialog_id: int) -> dict[str, Any]:
    dialog_id = check_id("dialog_id", dialog_id)
    try:
        result = check_and_enqueue(get_runtime(), dialog_id, _enqueue_delivery)
    except OperationalError as exc:
        # Database unavailable: the inflight lease keeps the check safe; retry sooner than the lease.
        log.warning("check dialog=%s reason=database_unavailable retry", dialog_id)
        countdown = min(CHECK_LEASE / 3, backoff(self.request.retries + 1, None))
        raise self.retry(exc=exc, countdown=countdown, max_retries=None) from None
    return {"deliveries": list(result.delivery_ids), "recheck_at": result.recheck_at}


@app.task(name="notifier.deliver", bind=True, time_limit=DELIVERY_TIME_LIMIT, soft_time_limit=DELIVERY_TIME_LIMIT - 15)
def deliver(self: Task, delivery_id: int) -> dict[str, Any]:
    delivery_id = check_id("delivery_id", delivery_id)
    try:
        outcome = run_delivery(get_runtime(), delivery_id)
    except OperationalError as exc:
        log.warning("delivery id=%s reason=database_unavailable retry", delivery_id)
        raise self.retry(exc=exc, countdown=backoff(self.request.retries + 1, None), max_retries=None) from None
    if outcome.status is DeliveryStatus.PENDING and outcome.retry_in is not None:
        # The ledger holds the real not-before time; if this retry message is lost, the sweeper re-sends.
        raise self.retry(countdown=min(outcome.retry_in, MAX_CELERY_COUNTDOWN), max_retries=None)
    if outcome.status is DeliveryStatus.FAILED:
        raise DeliveryFailed(f"delivery {delivery_id} failed: {outcome.reason}")
    return {"status": outcome.status.value if outcome.status else None, "reason": outcome.reason}


@app.task(name="notifier.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Move due checks from Redis to the queue, and re-enqueue deliveries whose worker vanished."""
    return dispatch(get_runtime(), _enqueue_check, _enqueue_delivery)


def _enqueue_check(dialog_id: int) -> None:
    check_dialog.apply_async((dialog_id,))


def _enqueue_delivery(delivery_id: int) -> None:
    deliver.apply_async((delivery_id,))


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    set_runtime(None)
