"""Thin Celery tasks: parse ids, call one function in `notifier`, translate its outcome for Celery.

All are safe to run twice: checks land on the ledger's unique keys, deliveries are claimed before sending.
Database and Redis outages become `Unavailable` in one place (`notifier.outages.map_outages`) and are
handled here in one way per kind of task: work tasks retry later, periodic tasks skip one tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from celery import Task
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.log import get_multiprocessing_logger

# The channels, with their libraries (pywebpush brings aiohttp), are imported here, in the worker's main
# process before its pool forks: no pool process pays for the import on its first delivery, which made the
# first burst after a start about half a second late. (The notifier package imports them lazily, so that
# the host's API processes, which never send, do not load them.)
import notifier.channels.email  # noqa: F401
import notifier.channels.webpush  # noqa: F401
from notifier import logs, metrics
from notifier.check import dispatch, run_checks
from notifier.clear import run_clear
from notifier.config import get_settings, log_format
from notifier.deliver import DeliveryOutcome, run_delivery
from notifier.enums import DeliveryStatus
from notifier.errors import ConfigError, DeliveryFailed, Unavailable
from notifier.ledger import purge_history
from notifier.metrics import exporter
from notifier.outages import map_outages
from notifier.reconcile import reconcile
from notifier.retry import backoff
from notifier.runtime import get_runtime, set_runtime
from notifier.sending import run_batch
from notifier.snapshot import host_tables_missing
from notifier.startup import check_push, check_redis, notes
from notifier.validate import check_id
from worker.celery_app import (
    BATCH_TIME_LIMIT,
    BATCH_WAIT,
    CHECK_TIME_LIMIT,
    DELIVERY_TIME_LIMIT,
    MAX_CELERY_COUNTDOWN,
    RETENTION_TIME_LIMIT,
    app,
)

log = logging.getLogger(__name__)


def _retry_later(
    task: Task, what: str, exc: Unavailable, args: tuple[Any, ...], cap: float = MAX_CELERY_COUNTDOWN
) -> NoReturn:
    """An outage is nobody's fault: try the same work again later, without counting an attempt."""
    countdown = min(cap, backoff(task.request.retries + 1, None, get_runtime().settings.retry_base_seconds))
    log.warning("%s reason=%s_unavailable retry_in=%.1fs", what, exc.service, countdown)
    raise task.retry(args=args, exc=exc, countdown=countdown, max_retries=None) from None


@contextmanager
def _skip_tick_on_outage(what: str) -> Iterator[None]:
    """Periodic tasks run again in a moment: one warning line per tick, no traceback, no retry."""
    try:
        with map_outages():
            yield
    except Unavailable as exc:
        log.warning("%s reason=%s_unavailable", what, exc.service)


@app.task(name="notifier.check_dialogs", bind=True, time_limit=CHECK_TIME_LIMIT, soft_time_limit=CHECK_TIME_LIMIT - 10)
def check_dialogs(self: Task, dialog_ids: list[int]) -> dict[str, Any]:
    """Due checks, in a chunk from the dispatcher. One dialog's failure never holds up the others; an
    outage retries what is left of the chunk (the inflight leases in Redis cover a worker that dies)."""
    ids = [check_id("dialog_id", d) for d in dialog_ids]
    rt = get_runtime()
    done: dict[str, Any] = {}
    batches = _Batches(rt.settings.send_batch_size)
    try:
        with map_outages(), batches:
            for dialog_id, result in run_checks(rt, ids, batches.add):
                done[str(dialog_id)] = (
                    {"failed": True} if result is None
                    else {"deliveries": list(result.delivery_ids), "recheck_at": result.recheck_at}
                )
                batches.flush_if_waiting()  # sending starts while the rest of the chunk is still checked
    except Unavailable as exc:
        left = [d for d in ids if str(d) not in done]
        shown = ",".join(str(d) for d in left[:5]) + (f",+{len(left) - 5}" if len(left) > 5 else "")
        _retry_later(self, f"check dialog={shown}", exc, (left,), cap=rt.settings.check_lease_seconds / 3)
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
        with map_outages():
            outcome = run_delivery(get_runtime(), delivery_id)
    except Unavailable as exc:
        _retry_later(self, f"delivery id={delivery_id}", exc, (delivery_id,))
    if outcome.status is DeliveryStatus.PENDING and outcome.retry_in is not None:
        # The ledger holds the real not-before time; if this retry message is lost, the sweeper re-sends.
        raise self.retry(countdown=min(outcome.retry_in, MAX_CELERY_COUNTDOWN), max_retries=None)
    if outcome.status is DeliveryStatus.FAILED:
        raise DeliveryFailed(f"delivery {delivery_id} failed: {outcome.reason}")
    return {"status": outcome.status.value if outcome.status else None, "reason": outcome.reason}


@app.task(name="notifier.deliver_batch", bind=True, time_limit=BATCH_TIME_LIMIT, soft_time_limit=BATCH_TIME_LIMIT - 10)
def deliver_batch(self: Task, delivery_ids: list[int]) -> dict[str, int]:
    """Up to NOTIFIER_SEND_BATCH_SIZE deliveries sent concurrently on this process's lanes
    (`notifier.sending`); retries and outages go on as single `notifier.deliver` tasks. Those for a lane
    whose server is slow and that holds all it may are left to the sweeper (`run_batch`)."""
    ids = [check_id("delivery_id", d) for d in delivery_ids]
    try:
        result = run_batch(get_runtime(), ids, _follow_up, BATCH_WAIT, until_queued=True)
    except Unavailable as exc:
        _retry_later(self, f"delivery batch size={len(ids)}", exc, (ids,))
    counts = {status: result.count(status) for status in ("sent", "skipped", "failed", "pending")}
    return {**counts, "running": len(result.still_running), "left": len(result.left)}


def _follow_up(delivery_id: int, outcome: DeliveryOutcome | Unavailable) -> None:
    """In a sending lane, as a delivery of a batch ends: queue its retry, if it needs one."""
    if isinstance(outcome, Unavailable):
        countdown = backoff(1, None, get_runtime().settings.retry_base_seconds)
        log.warning("delivery id=%s reason=%s_unavailable retry_in=%.1fs", delivery_id, outcome.service, countdown)
    elif outcome.status is DeliveryStatus.PENDING and outcome.retry_in is not None:
        countdown = outcome.retry_in  # the ledger holds the real not-before time; the sweeper covers a lost message
    else:
        return
    deliver.apply_async((delivery_id,), countdown=min(countdown, MAX_CELERY_COUNTDOWN))


class _Batches:
    """Delivery ids gathered into `notifier.deliver_batch` tasks: published when a batch is full, when its
    first id has waited FLUSH_AFTER seconds (checked between dialogs), and on leaving the block.

    A batch that cannot be published (Redis went away) is not lost: its deliveries are pending in the
    ledger under an enqueue lease, and the sweeper hands them out when it expires."""

    FLUSH_AFTER = 0.2

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: list[int] = []
        self._since = 0.0

    def add(self, delivery_id: int) -> None:
        if not self._ids:
            self._since = time.monotonic()
        self._ids.append(delivery_id)
        if len(self._ids) >= self.size:
            self.flush()

    def flush_if_waiting(self) -> None:
        if self._ids and time.monotonic() - self._since >= self.FLUSH_AFTER:
            self.flush()

    def flush(self) -> None:
        if self._ids:
            deliver_batch.apply_async((self._ids,))
            self._ids = []

    def __enter__(self) -> _Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.flush()
        except Exception as error:  # noqa: BLE001 - the sweeper re-sends them; the original error matters more
            log.warning("delivery batch not queued count=%d error=%s", len(self._ids), type(error).__name__)


@app.task(name="notifier.clear_dialogs", ignore_result=True, time_limit=CHECK_TIME_LIMIT)
def clear_dialogs(dialog_ids: list[int]) -> int:
    """Clear-on-read pushes for dialogs whose managers read them (best effort: an outage skips them)."""
    ids = [check_id("dialog_id", d) for d in dialog_ids]
    sent = 0
    with _skip_tick_on_outage("clear"):
        for dialog_id in ids:
            sent += run_clear(get_runtime(), dialog_id)
    return sent


@app.task(name="notifier.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Move due checks from Redis to the queue, and re-enqueue deliveries whose worker vanished."""
    moved = 0
    with _skip_tick_on_outage("dispatch"):
        rt = get_runtime()
        with _Batches(rt.settings.send_batch_size) as batches:
            moved = dispatch(rt, _enqueue_checks, batches.add, enqueue_clears=_enqueue_clears)
        metrics.dispatch_ran()
    return moved


@app.task(name="notifier.reconcile", ignore_result=True, time_limit=120, soft_time_limit=100)
def reconcile_task() -> int:
    """Schedule visitor messages past their deadline that have no decision (the fast path lost them)."""
    rt = get_runtime()
    scheduled = 0
    with _skip_tick_on_outage("reconcile"):
        if host_tables_missing(rt.engine):
            return 0  # said once at start-up; no error every 30 s
        scheduled = len(reconcile(rt).scheduled)
    return scheduled


@app.task(name="notifier.retention", ignore_result=True, time_limit=RETENTION_TIME_LIMIT,
          soft_time_limit=RETENTION_TIME_LIMIT - 60)
def retention() -> int:
    """Delete decisions and finished deliveries older than NOTIFIER_RETENTION_DAYS, in bounded batches."""
    rt = get_runtime()
    deleted = 0
    with _skip_tick_on_outage("retention"):
        purged = purge_history(rt.engine, rt.settings.retention_days)
        deleted = purged.decisions + purged.deliveries
        log.info("retention decisions=%s deliveries=%s complete=%s", purged.decisions, purged.deliveries,
                 "yes" if purged.complete else "no")
    return deleted


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger | None = None, **_: Any) -> None:
    """NOTIFIER_LOG_FORMAT for every handler Celery sets up, in the worker, its pool children and beat."""
    try:
        kind = log_format()
    except ConfigError:
        kind = "text"  # the start-up check names the variable and stops the worker
    logs.use_format(logger, kind)
    logs.use_format(get_multiprocessing_logger(), kind)


@after_setup_logger.connect
def _quiet_routine_lines(**_: Any) -> None:
    # The dispatcher runs four times a second: Celery's per-task received/succeeded and beat's "sending" lines would
    # bury our one-line-per-decision log. Failures still log at WARNING and above.
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_init.connect
def _startup_checks(**_: Any) -> None:
    try:
        rt = get_runtime()  # reads and validates every NOTIFIER_* setting
        check_push(rt.settings)
    except ConfigError as exc:
        log.critical("refusing to start: %s", exc)
        raise SystemExit(f"notifier worker refuses to start: {exc}") from None
    try:
        with map_outages():
            missing = host_tables_missing(rt.engine)
            if missing:
                log.warning(
                    "NOTIFIER_DATABASE_URL has no host table(s) %s: nothing can be checked until it points at the "
                    "host's database", ", ".join(missing),
                )
            warnings = check_redis(rt.store, rt.settings)
    except ConfigError as exc:
        log.critical("refusing to start: %s", exc)
        raise SystemExit(f"notifier worker refuses to start: {exc}") from None
    except Unavailable as exc:
        log.warning("startup check skipped: %s unreachable; the worker will keep retrying", exc.service)
        return
    for warning in warnings:
        log.warning("%s", warning)


def _enqueue_checks(dialog_ids: list[int]) -> None:
    check_dialogs.apply_async((dialog_ids,))


def _enqueue_clears(dialog_ids: list[int]) -> None:
    clear_dialogs.apply_async((dialog_ids,))


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    set_runtime(None)


@worker_init.connect
def _metrics_prepare(**_: Any) -> None:
    # Connected after _startup_checks: bad settings have stopped the worker by now.
    exporter.prepare(get_settings())


@worker_ready.connect
def _metrics_start(**_: Any) -> None:
    exporter.start(get_settings(), lambda: get_runtime().store)


@worker_ready.connect
def _say_what_is_off(**_: Any) -> None:
    # Once, when logging is set up (worker_init runs before it, and would print past the JSON formatter).
    for note in notes(get_settings()):
        log.warning("%s", note)


@worker_process_shutdown.connect
def _metrics_child_exited(pid: int | None = None, **_: Any) -> None:
    if pid is not None:
        exporter.child_exited(pid)


@worker_shutdown.connect
def _metrics_stop(**_: Any) -> None:
    exporter.stop()

