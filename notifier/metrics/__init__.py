"""Prometheus metrics: what the worker counts, how its prefork pool exports them, what the host counts.

Public, for the worker's code paths (each a one-line call, never raising into the caller):
`count_decision(decision)`, `count_delivery(channel, outcome)`, `observe_lateness(channel, seconds)`,
`dispatch_ran(now)`, and `TimedSender` (wraps a channel's sender to time each send). The exporter lives in
`notifier.metrics.exporter` (the worker's main process only), the host's collector in
`notifier.metrics.host` (returned by `worker.client.metrics_collector()`); both are imported where used.

Names and labels are listed in `notifier.metrics.record.EXPORTED` and in the README ("Operations").
"""

from notifier.metrics.record import TimedSender, count_decision, count_delivery, dispatch_ran, observe_lateness

__all__ = ["TimedSender", "count_decision", "count_delivery", "dispatch_ran", "observe_lateness"]
