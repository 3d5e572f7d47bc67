"""Ready-made glue for host web frameworks; each module needs its framework installed, this package nothing.

Public: `notifier.integrations.fastapi.notifier_router` (the `fastapi` extra), the HTTP kit a FastAPI
host mounts under a prefix of its choice. Like `worker.client`, it never imports Celery, SMTP, push or
template code.
"""
