"""Notification fallback worker: decides who must hear about an unread visitor message and delivers it.

This package is imported lazily by the worker; host processes import only `worker.client`, which
touches `notifier.config`, `notifier.store`, `notifier.ledger` and `notifier.db`, never rendering or channels.

Public API: `notifier.config.Settings` / `load_settings`, `notifier.enums`, `notifier.errors`,
`notifier.decide.decide`, and the `notifier` console script (`notifier.cli:main`).
"""

__version__ = "0.1.0"
