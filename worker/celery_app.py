"""The Celery app. Configuration is computed lazily (add_defaults), when Celery first reads it.

Settings chosen for tasks that take seconds, not minutes (see README "Operations"):
late acks and reject-on-worker-lost so a killed worker's task comes back; prefetch of one; a visibility
timeout well above our longest task and Celery retry countdown; explicit socket timeouts everywhere.
Long waits (grace periods, escalations, long backoffs) never live in Celery: they are in Redis or the ledger.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery

from notifier.config import get_settings
from notifier.redis_conn import broker_url, resolve_url

CHECK_TIME_LIMIT = 60
DELIVERY_TIME_LIMIT = 90
VISIBILITY_TIMEOUT = 900  # > max Celery countdown (300 s) + task time limit, so nothing runs twice early
MAX_CELERY_COUNTDOWN = 300
RETENTION_INTERVAL = 3600  # seconds between retention runs; each deletes in bounded batches
RETENTION_TIME_LIMIT = 600
BATCH_TIME_LIMIT = 60
BATCH_WAIT = 2.0  # a batch task waits this long for its deliveries; the rest finish in the background
# Two queues, so that dispatch and checks never wait behind a backlog of sends: `notifier` carries the
# control work (dispatch, checks, reconcile, retention), `notifier.send` the deliveries and clears.
CONTROL_QUEUE = "notifier"
SEND_QUEUE = "notifier.send"
SEND_TASKS = ("notifier.deliver", "notifier.deliver_batch", "notifier.clear_dialogs")


def _config() -> dict[str, Any]:
    settings = get_settings()
    url = broker_url(resolve_url(settings))
    interval = settings.dispatch_interval_seconds
    return dict(
        broker_url=url,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "retry_on_timeout": True,
            "health_check_interval": 25,
        },
        broker_heartbeat=0,
        # With late acks, a task running when the broker connection drops will be redelivered: stop it.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=CONTROL_QUEUE,
        task_routes={name: {"queue": SEND_QUEUE} for name in SEND_TASKS},
        beat_schedule_filename=str(settings.redis_embedded_dir.parent / "celerybeat-schedule"),
        beat_schedule={
            "notifier-dispatch": {
                "task": "notifier.dispatch_due",
                "schedule": timedelta(seconds=interval),
                "options": {"expires": max(5.0, interval * 5)},
            },
            "notifier-reconcile": {
                "task": "notifier.reconcile",
                "schedule": timedelta(seconds=settings.reconcile_interval_seconds),
                "options": {"expires": max(10.0, settings.reconcile_interval_seconds * 2)},
            },
            "notifier-retention": {
                "task": "notifier.retention",
                "schedule": timedelta(seconds=RETENTION_INTERVAL),
                "options": {"expires": RETENTION_INTERVAL / 2},
            },
        },
    )


app = Celery("notifier", include=["worker.tasks"], set_as_current=False)
app.add_defaults(_config)  # evaluated when Celery first reads its configuration, not at import
