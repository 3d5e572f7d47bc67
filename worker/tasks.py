"""Thin Celery tasks: parse ids, call one function in `notifier`, translate its outcome for Celery.

All are safe to run twice: checks land on the ledger's unique keys, deliveries are claimed before sending.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from celery.signals import after_setup_logger, worker_init, worker_process_shutdown
from sqlalchemy.exc import OperationalError

from notifier.check import check_and_enqueue, dispatch
from notifier.deliver import backoff, run_delivery
from notifier.enums import DeliveryStatus
from notifier.errors import ConfigError
from notifier.readstate import check_id
from notifier.reconcile import host_tables_missing, reconcile
from notifier.runtime import get_runtime, set_runtime
from notifier.startup import check_push, check_redis
from worker.celery_app import CHECK_TIME_LIMIT, DELIVERY_TIME_LIMIT, MAX_CELERY_COUNTDOWN, app

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """Raised after a delivery is recorded as failed, so Flower shows it as a failure."""


@app.task(name="notifier.check_dialogs", bind=True, time_limit=CHECK_TIME_LIMIT, soft_time_limit=CHECK_TIME_LIMIT - 10)
def check_dialogs(self: Task, dialog_ids: list[int]) -> dict[str, Any]:
    """Due checks, in a chunk from the dispatcher. A database outage retries what is left of the chunk;
    the inflight leases in Redis cover a worker that dies meanwhile."""
    ids = [check_id("dialog_id", d) for d in dialog_ids]
    rt = get_runtime()
    done: dict[str, Any] = {}
    for i, dialog_id in enumerate(ids):
        try:
            result = check_and_enqueue(rt, dialog_id, _enqueue_delivery)
        except OperationalError as exc:
            log.warning("check dialog=%s reason=database_unavailable retry", dialog_id)
            wait = backoff(self.request.retries + 1, None, rt.settings.retry_base_seconds)
            countdown = min(rt.settings.check_lease_seconds / 3, wait)
            raise self.retry(args=(ids[i:],), exc=exc, countdown=countdown, max_retries=None) from None
        done[str(dialog_id)] = {"deliveries": list(result.delivery_ids), "recheck_at": result.recheck_at}
    return done


@app.task(name="notifier.check_dialog")
def check_dialog(dialog_id: int) -> dict[str, Any]:
    """One check, for operators (`notifier.check_dialog.delay(id)`); the dispatcher uses check_dialogs."""
    result: dict[str, Any] = check_dialogs.run([dialog_id])
    return result


@app.task(name="notifier.deliver", bind=True, time_limit=DELIVERY_TIME_LIMIT, soft_time_limit=DELIVERY_TIME_LIMIT - 15)
def deliver(self: Task, delivery_id: int) -> dict[str, Any]:
    delivery_id = check_id("delivery_id", delivery_id)
    try:
        outcome = run_delivery(get_runtime(), delivery_id)
    except OperationalError as exc:
        log.warning("delivery id=%s reason=database_unavailable retry", delivery_id)
        countdown = backoff(self.request.retries + 1, None, get_runtime().settings.retry_base_seconds)
        raise self.retry(exc=exc, countdown=countdown, max_retries=None) from None
    if outcome.status is DeliveryStatus.PENDING and outcome.retry_in is not None:
        # The ledger holds the real not-before time; if this retry message is lost, the sweeper re-sends.
        raise self.retry(countdown=min(outcome.retry_in, MAX_CELERY_COUNTDOWN), max_retries=None)
    if outcome.status is DeliveryStatus.FAILED:
        raise DeliveryFailed(f"delivery {delivery_id} failed: {outcome.reason}")
    return {"status": outcome.status.value if outcome.status else None, "reason": outcome.reason}


@app.task(name="notifier.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Move due checks from Redis to the queue, and re-enqueue deliveries whose worker vanished."""
    try:
        return dispatch(get_runtime(), _enqueue_checks, _enqueue_delivery)
    except OperationalError:
        # Runs every second: one line per tick, not a traceback. Due checks were already handed over.
        log.warning("dispatch reason=database_unavailable")
        return 0


@app.task(name="notifier.reconcile", ignore_result=True, time_limit=120, soft_time_limit=100)
def reconcile_task() -> int:
    """Schedule visitor messages past their deadline that have no decision (the fast path lost them)."""
    rt = get_runtime()
    try:
        if host_tables_missing(rt.engine):
            return 0  # said once at start-up; no error every 30 s
        return len(reconcile(rt).scheduled)
    except OperationalError:
        log.warning("reconcile reason=database_unavailable")
        return 0


@after_setup_logger.connect
def _quiet_routine_lines(**_: Any) -> None:
    # The dispatcher runs every second: Celery's per-task received/succeeded and beat's "sending" lines would
    # bury our one-line-per-decision log. Failures still log at WARNING and above.
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_init.connect
def _startup_checks(**_: Any) -> None:
    rt = get_runtime()
    missing = host_tables_missing(rt.engine)
    if missing:
        log.warning(
            "NOTIFIER_DATABASE_URL has no host table(s) %s: nothing can be checked until it points at the host's database",
            ", ".join(missing),
        )
    try:
        check_push(rt.settings)
        warnings = check_redis(rt.store.r, rt.settings)
    except ConfigError as exc:
        log.critical("refusing to start: %s", exc)
        raise SystemExit(f"notifier worker refuses to start: {exc}") from None
    except (redis.RedisError, OSError) as exc:
        log.warning("startup check skipped: redis unreachable (%s); the worker will keep retrying", type(exc).__name__)
        return
    for warning in warnings:
        log.warning("%s", warning)


def _enqueue_checks(dialog_ids: list[int]) -> None:
    check_dialogs.apply_async((dialog_ids,))


def _enqueue_delivery(delivery_id: int) -> None:
    deliver.apply_async((delivery_id,))


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    set_runtime(None)
