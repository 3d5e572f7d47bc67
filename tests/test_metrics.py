"""The metrics in one process: what each recording function counts, the queue's gauges read from a real
Redis at scrape time, the host's collector scraped over HTTP, and the exporter's life cycle in a child
process (multiprocess mode changes process-wide state, so it never runs inside the test process)."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from notifier.channels.base import DeliveryResult
from notifier.config import load_settings, set_settings
from notifier.decide import Decision
from notifier.enums import Action, Channel, Reason
from notifier.errors import TransientError
from notifier.metrics import TimedSender, count_decision, count_delivery, dispatch_ran, observe_lateness
from notifier.metrics.exporter import QueueCollector
from notifier.metrics.record import families
from notifier.redis_conn import reset_clients
from notifier.runtime import Runtime
from notifier.store import Store
from tests.support import free_port
from worker import client

ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def value(name: str, **labels: str) -> float:
    found = families().registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# --- recording --------------------------------------------------------------------------------------


def test_decisions_are_counted_by_action_channel_and_reason() -> None:
    skip = ("notifier_decisions_total", {"action": "skip", "channel": "none", "reason": "online"})
    notify = ("notifier_decisions_total", {"action": "notify", "channel": "webpush", "reason": "unread"})
    before = value(skip[0], **skip[1]), value(notify[0], **notify[1])
    count_decision(Decision(7, Action.SKIP, Reason.ONLINE))
    count_decision(Decision(7, Action.SKIP, Reason.ONLINE))
    count_decision(Decision(7, Action.NOTIFY, Reason.UNREAD, Channel.WEBPUSH))
    assert (value(skip[0], **skip[1]), value(notify[0], **notify[1])) == (before[0] + 2, before[1] + 1)


def test_lateness_counts_from_the_deadline_early_is_on_time_unknown_is_left_out() -> None:
    count0 = value("notifier_notification_lateness_seconds_count", channel="webpush")
    sum0 = value("notifier_notification_lateness_seconds_sum", channel="webpush")
    le1 = value("notifier_notification_lateness_seconds_bucket", channel="webpush", le="1.0")
    observe_lateness(Channel.WEBPUSH, 1000.0, 997.5)  # 2.5 s late
    observe_lateness(Channel.WEBPUSH, 1000.0, 1001.0)  # a second early: on time
    observe_lateness(Channel.WEBPUSH, 1000.0, None)  # a delivery from before migration 0004
    assert value("notifier_notification_lateness_seconds_count", channel="webpush") == count0 + 2
    assert value("notifier_notification_lateness_seconds_sum", channel="webpush") == sum0 + 2.5
    assert value("notifier_notification_lateness_seconds_bucket", channel="webpush", le="1.0") == le1 + 1


class _Refusing:
    channel = Channel.EMAIL
    connections_opened = 3

    def send(self, target: object, rendered: object) -> DeliveryResult:
        raise TransientError("smtp 421: later")

    def close(self) -> None:
        pass


def test_every_send_is_timed_failed_ones_too_and_the_sender_stays_itself() -> None:
    timed: TimedSender[object, object] = TimedSender(_Refusing())
    before = value("notifier_send_seconds_count", channel="email")
    with pytest.raises(TransientError):
        timed.send(object(), object())
    assert value("notifier_send_seconds_count", channel="email") == before + 1
    assert timed.channel is Channel.EMAIL and timed.connections_opened == 3  # the sender's own attributes


def test_a_metrics_error_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="notifier.metrics.record"):
        count_delivery(None, "sent")  # type: ignore[arg-type]  # a bug in a caller: no channel
        count_delivery(Channel.EMAIL, "sent")
    assert value("notifier_deliveries_total", channel="email", status="sent") >= 1
    assert "metrics not recorded error=AttributeError" in caplog.text  # once per process, then quiet


def test_dispatch_runs_and_when() -> None:
    runs = value("notifier_dispatch_runs_total")
    dispatch_ran(T0.timestamp())
    assert value("notifier_dispatch_runs_total") == runs + 1
    assert value("notifier_dispatch_last_run_timestamp_seconds") == T0.timestamp()


# --- the queue's gauges, from Redis at scrape time ----------------------------------------------------


def _queue_registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(QueueCollector(lambda: store))
    return registry


def test_queue_gauges_are_read_when_scraped(rt: Runtime) -> None:
    now = T0.timestamp()
    registry = _queue_registry(rt.store)
    with freeze_time(T0):
        assert registry.get_sample_value("notifier_pending_checks") == 0
        assert registry.get_sample_value("notifier_oldest_pending_age_seconds") == 0
        rt.store.schedule(100, 1, now - 30 - 60, 60.0)  # due 30 s ago
        rt.store.schedule(101, 2, now - 59, 60.0)  # due in a second
        rt.store.schedule(102, 3, now - 61, 60.0)  # due a second ago
        assert registry.get_sample_value("notifier_pending_checks") == 3
        assert registry.get_sample_value("notifier_oldest_pending_age_seconds") == 30.0
        moved = rt.store.dispatch(now, 1, 45.0, 8)  # the most overdue goes to a worker
        assert moved.due == [100]
        assert registry.get_sample_value("notifier_pending_checks") == 2
        assert registry.get_sample_value("notifier_inflight_checks") == 1
        assert registry.get_sample_value("notifier_oldest_pending_age_seconds") == 1.0
        rt.store.dispatch(now, 10, 45.0, 8)
        assert registry.get_sample_value("notifier_oldest_pending_age_seconds") == 0  # 101 is not due yet
        assert registry.get_sample_value("notifier_parked_checks") == 0


def test_queue_gauges_go_absent_while_redis_is_down_and_the_scrape_still_works(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"NOTIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    from notifier.redis_conn import client_for

    registry = _queue_registry(Store(client_for(settings.redis_url or "", timeout=0.5)))
    with caplog.at_level(logging.WARNING, logger="notifier.metrics.exporter"):
        text = generate_latest(registry).decode()
    assert "notifier_pending_checks" not in text
    assert "metrics queue gauges unavailable reason=redis_unavailable" in caplog.text
    reset_clients()


# --- the host's collector --------------------------------------------------------------------------


def test_the_host_collector_reports_schedule_failures_exactly() -> None:
    set_settings(load_settings({"NOTIFIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    reset_clients()
    registry = CollectorRegistry()
    registry.register(client.metrics_collector())
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        start = client.stats["schedule_failures"]
        for message_id in (11, 12, 13):
            assert client.schedule_fallback(100, message_id) is False
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert f"notifier_schedule_failures_total {float(start + 3)}" in text.splitlines()
    assert client.stats["schedule_failures"] == start + 3
    assert 'notifier_schedules_total{result="new"}' in text and "notifier_presence_failures_total" in text


def test_the_host_collector_loads_no_worker_code() -> None:
    code = (
        "import sys\nfrom prometheus_client import CollectorRegistry, generate_latest\nfrom worker import client\n"
        "r = CollectorRegistry(); r.register(client.metrics_collector()); generate_latest(r)\n"
        "print(','.join(m for m in ('celery', 'aiosmtplib', 'pywebpush', 'jinja2', 'notifier.render', 'notifier.channels',"
        " 'notifier.check', 'worker.tasks') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == ""


# --- the exporter's life cycle, in a child process -------------------------------------------------

_LIFECYCLE = """
import os, sys, urllib.request
from notifier.config import load_settings
from notifier.enums import Channel
from notifier.metrics import exporter, record
from notifier.store import Store
from notifier.redis_conn import client_for

port, busy = int(sys.argv[1]), int(sys.argv[2])
settings = load_settings({"NOTIFIER_METRICS_PORT": str(port), "NOTIFIER_METRICS_ADDRESS": "127.0.0.1",
                          "NOTIFIER_REDIS_URL": sys.argv[3]})
record.count_delivery(Channel.EMAIL, "sent")            # counted before multiprocess mode: not exported
folder = exporter.prepare(settings)
assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder) and folder.is_dir()
for _ in range(2):                                     # two children, as Celery's pool forks them
    pid = os.fork()
    if pid == 0:
        record.count_delivery(Channel.EMAIL, "sent")
        os._exit(0)
    os.waitpid(pid, 0)
    exporter.child_exited(pid)
store = lambda: Store(client_for(settings.redis_url))
assert exporter.start(load_settings({"NOTIFIER_METRICS_PORT": str(busy), "NOTIFIER_METRICS_ADDRESS": "127.0.0.1"}),
                      store) is False                  # a port in use: logged, the worker goes on
assert exporter.start(settings, store) is True
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
print([l for l in text.splitlines() if l.startswith(("notifier_deliveries_total", "notifier_pending_checks "))])
exporter.stop()
print("removed" if not folder.exists() else "kept")
"""


def test_the_exporter_sums_its_children_and_cleans_up(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import socket

    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
        out = subprocess.run(
            [sys.executable, "-c", _LIFECYCLE, str(port), str(busy.getsockname()[1]), redis_server.url],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(['notifier_deliveries_total{channel="email",status="sent"} 2.0', "notifier_pending_checks 0.0"])
    assert lines[1] == "removed"
    assert "metrics exporter not started address=127.0.0.1" in out.stderr
