"""Notification fallback worker: decides who must hear about an unread visitor message and delivers it.

Host processes import only `worker.client`, which touches `notifier.config`, `notifier.validate`,
`notifier.store`, `notifier.redis_conn`, `notifier.ledger` and `notifier.db`, never rendering, channels or
Celery. The worker side, one home per concern:

- `notifier.decide`: the rules, pure (`decide` at check time, `decide_delivery` just before each send);
- `notifier.snapshot`: every read of the host's tables and ours; `notifier.ledger`: every write;
- `notifier.store`: every Redis key and script; `notifier.redis_conn`: connections;
- `notifier.check`, `notifier.deliver`, `notifier.reconcile`, `notifier.cli`: orchestration only;
- `notifier.render` and `notifier.channels`: what a person receives, and how it travels;
- `notifier.errors` (one tree under `NotifierError`) and `notifier.outages` (library outages mapped once);
- `notifier.metrics` (Prometheus figures, the worker's exporter, the host's collector) and `notifier.logs`
  (text or JSON lines, addresses redacted); retention is a ledger write (`notifier.ledger.retention`).

Public API: `notifier.config.Settings` / `load_settings`, `notifier.enums`, `notifier.errors`,
`notifier.decide.decide`, and the `notifier` console script (`notifier.cli:main`).
"""

__version__ = "0.1.0"
