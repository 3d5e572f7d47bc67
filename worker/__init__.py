"""The Celery side of the product.

`celery -A worker worker -B -E` finds the app here. The app is built on first attribute access, so
`import worker.client` (what host processes do) never loads Celery, tasks, SMTP, push or templates.

Public: `worker.app` (the Celery app), `worker.client` (the host's API).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
