"""The host's side: counters `worker.client` keeps in its `stats`, as a collector for the host's /metrics.

    from prometheus_client import REGISTRY
    from worker import client
    REGISTRY.register(client.metrics_collector())

Uses only prometheus-client API present in 0.20 (the host pins 0.20.0). Each API process reports its own
counts (Prometheus adds them up across instances; a restart starts from 0, which `increase()` handles).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric


class HostCollector:
    """Reads the client's counters at scrape time; holds nothing but a reference to them."""

    def __init__(self, stats: Mapping[str, int]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield CounterMetricFamily(
            "notifier_schedule_failures", "schedule_fallback calls that Redis did not take (the reconciler catches "
            "them later).", value=stats.get("schedule_failures", 0),
        )
        schedules = CounterMetricFamily(
            "notifier_schedules", "schedule_fallback calls Redis took: a new pending check or one coalesced into it.",
            labels=("result",),
        )
        schedules.add_metric(("new",), stats.get("scheduled", 0))
        schedules.add_metric(("coalesced",), stats.get("coalesced", 0))
        yield schedules
        yield CounterMetricFamily(
            "notifier_presence_failures", "Presence calls that failed against Redis.", value=stats.get("presence_failures", 0),
        )
