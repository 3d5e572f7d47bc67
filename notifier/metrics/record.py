"""What the worker counts. Every function here is safe on any code path: a metrics failure is logged once
per process and never reaches the decision or the delivery that called it.

The metric objects are built on first use in a process. In the worker, `notifier.metrics.exporter.prepare`
switches prometheus-client to multiprocess mode in the main process before the pool forks and drops
whatever was built before, so every child writes to the shared directory the exporter reads.
Labels are bounded enums (action, channel, reason, status), never ids: one series per combination.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from notifier.enums import Channel

if TYPE_CHECKING:  # imported by host processes too (through the ledger): nothing heavy until first use
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from notifier.channels.base import DeliveryResult, Sender
    from notifier.decide import Decision

log = logging.getLogger(__name__)

# Lateness: a healthy worker sends within a dispatch tick or two of the deadline; minutes mean trouble.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# One send: an SMTP transaction or a push request on a kept-alive connection, up to their timeouts.
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NO_CHANNEL = "none"  # the channel label of a decision about a recipient or dialog, not one channel
DELIVERY_OUTCOMES = ("sent", "failed", "retry", "skipped")

# Every family the worker and the host export: name -> (type, label names). Tests hold the dashboard to it.
EXPORTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "notifier_decisions_total": ("counter", ("action", "channel", "reason")),
    "notifier_deliveries_total": ("counter", ("channel", "status")),
    "notifier_notification_lateness_seconds": ("histogram", ("channel",)),
    "notifier_send_seconds": ("histogram", ("channel",)),
    "notifier_dispatch_runs_total": ("counter", ()),
    "notifier_dispatch_last_run_timestamp_seconds": ("gauge", ()),
    "notifier_pending_checks": ("gauge", ()),
    "notifier_oldest_pending_age_seconds": ("gauge", ()),
    "notifier_inflight_checks": ("gauge", ()),
    "notifier_parked_checks": ("gauge", ()),
    "notifier_schedule_failures_total": ("counter", ()),
    "notifier_schedules_total": ("counter", ("result",)),
    "notifier_presence_failures_total": ("counter", ()),
}


@dataclass(frozen=True)
class Families:
    registry: CollectorRegistry  # this process's own figures (tests read them; the exporter reads the files)
    decisions: Counter
    deliveries: Counter
    lateness: Histogram
    send: Histogram
    dispatch_runs: Counter
    dispatch_last: Gauge


def _build() -> Families:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    # A private registry: nothing of ours lands in prometheus-client's global one (a host's /metrics).
    # In multiprocess mode the exporter reads the files, not this registry.
    registry = CollectorRegistry(auto_describe=False)
    return Families(
        registry=registry,
        decisions=Counter(
            "notifier_decisions_total", "Decisions recorded, at check and at send time.",
            ("action", "channel", "reason"), registry=registry,
        ),
        deliveries=Counter(
            "notifier_deliveries_total", "Delivery attempts by outcome: sent, failed, retry, skipped.",
            ("channel", "status"), registry=registry,
        ),
        lateness=Histogram(
            "notifier_notification_lateness_seconds", "Sent time minus the deadline the notification was due at.",
            ("channel",), buckets=LATENESS_BUCKETS, registry=registry,
        ),
        send=Histogram(
            "notifier_send_seconds", "Duration of one send by a channel (SMTP transaction, push request).",
            ("channel",), buckets=SEND_BUCKETS, registry=registry,
        ),
        dispatch_runs=Counter("notifier_dispatch_runs_total", "Runs of the dispatcher (notifier.dispatch_due).",
                              registry=registry),
        dispatch_last=Gauge(
            "notifier_dispatch_last_run_timestamp_seconds",
            "When the dispatcher last finished a run (the worker's start before its first run).",
            registry=registry, multiprocess_mode="max",
        ),
    )


_families: Families | None = None
_failed_once = False


def families() -> Families:
    global _families
    if _families is None:
        _families = _build()
    return _families


def reset() -> None:
    """Forget the metric objects: the next use builds them again (after the value class changed)."""
    global _families
    _families = None


P = ParamSpec("P")


def _safe(fn: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        global _failed_once
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a figure is not worth a notification
            if not _failed_once:
                _failed_once = True
                log.warning("metrics not recorded error=%s", type(exc).__name__)

    return wrapper


@_safe
def count_decision(decision: Decision) -> None:
    """One decision recorded (notify or skip, with its reason), at check or at send time."""
    channel = decision.channel.value if decision.channel is not None else NO_CHANNEL
    families().decisions.labels(decision.action.value, channel, decision.reason.value).inc()


@_safe
def count_delivery(channel: Channel, outcome: str) -> None:
    """One delivery attempt's outcome: sent, failed, retry or skipped."""
    families().deliveries.labels(channel.value, outcome).inc()


@_safe
def observe_lateness(channel: Channel, sent_at: float, due_at: float | None) -> None:
    """A notification went out at `sent_at` (the ledger's sent time) for a deadline of `due_at`; early
    counts as on time, and a delivery that does not know its deadline (made before migration 0004) is left out."""
    if due_at is not None:
        families().lateness.labels(channel.value).observe(max(0.0, sent_at - due_at))


@_safe
def observe_send(channel: Channel, seconds: float) -> None:
    families().send.labels(channel.value).observe(seconds)


@_safe
def dispatch_ran(now: float | None = None) -> None:
    """The dispatcher finished a run: the "no dispatch" alert watches this."""
    f = families()
    f.dispatch_runs.inc()
    f.dispatch_last.set(time.time() if now is None else now)


@_safe
def mark_started(now: float | None = None) -> None:
    """The worker started: "no dispatch for 2 minutes" counts from here until the first run."""
    families().dispatch_last.set(time.time() if now is None else now)


TargetT = TypeVar("TargetT")
RenderedT = TypeVar("RenderedT")


class TimedSender(Generic[TargetT, RenderedT]):
    """A channel's sender whose every `send` is timed into `notifier_send_seconds`, failures included.

    Everything else (its channel, `close`, a sender's own attributes) is the wrapped sender's."""

    def __init__(self, inner: Sender[TargetT, RenderedT]) -> None:
        self._inner = inner

    @property
    def channel(self) -> Channel:
        return self._inner.channel

    def send(self, target: TargetT, rendered: RenderedT) -> DeliveryResult:
        started = time.perf_counter()
        try:
            return self._inner.send(target, rendered)
        finally:
            observe_send(self._inner.channel, time.perf_counter() - started)

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
