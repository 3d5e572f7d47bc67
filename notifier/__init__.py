"""Notification fallback worker: decides who must hear about an unread visitor message and delivers it.

Host processes import only `worker.client` (and, in a FastAPI host, the kit `notifier.integrations.fastapi`),
which touch `notifier.config`, `notifier.validate`, `notifier.store`, `notifier.redis_conn`, `notifier.ledger`,
`notifier.snapshot`, `notifier.offload` (blocking database calls off the event loop) and `notifier.db`, never
rendering, channels or Celery. The worker side, one home per concern:

- `notifier.decide`: the rules, pure (`decide` at check time, `decide_delivery` just before each send,
  `may_see` for who may see a dialog);
- `notifier.snapshot`: every read of the host's tables and ours; `notifier.ledger`: every write;
- `notifier.store`: every Redis key and script; `notifier.redis_conn`: connections;
- `notifier.check`, `notifier.deliver`, `notifier.reconcile`, `notifier.cli`: orchestration only;
- `notifier.render` and `notifier.channels`: what a person receives, and how it travels;
- `notifier.errors` (one tree under `NotifierError`) and `notifier.outages` (library outages mapped once);
- `notifier.metrics` (Prometheus figures, the worker's exporter, the host's collector) and `notifier.logs`
  (text or JSON lines, addresses redacted); retention is a ledger write (`notifier.ledger.retention`).
- `notifier.integrations`: glue for host frameworks (the FastAPI kit); `notifier.migrate`: our migration step
  and the host's Alembic filter (`include_object`).

Public API: `notifier.config.Settings` / `load_settings`, `notifier.enums`, `notifier.errors`,
`notifier.decide.decide`, `notifier.integrations.fastapi.notifier_router`, `notifier.migrate.include_object`,
and the `notifier` console script (`notifier.cli:main`).
"""

__version__ = "0.1.0"
