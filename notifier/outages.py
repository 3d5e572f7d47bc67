"""Library errors that mean "a service is down" become our `Unavailable`, here and nowhere else.

Used at the boundaries (Celery tasks, the host's client calls) so the rest of the code never catches
`OperationalError` or `redis.ConnectionError` itself. Errors that are not outages (a `DataError`, a bug)
pass through unchanged: they belong to the one dialog or delivery that caused them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import exc as sa_exc

from notifier.errors import Unavailable

# OperationalError: connection refused or lost, lock timeouts; InterfaceError: a closed connection;
# TimeoutError (SQLAlchemy's): no connection free in the pool in time.
DATABASE_OUTAGES: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)
REDIS_OUTAGES: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, (Unavailable, *DATABASE_OUTAGES, *REDIS_OUTAGES))


@contextmanager
def map_outages() -> Iterator[None]:
    """Re-raise database and Redis outages as `Unavailable`; everything else as it is."""
    try:
        yield
    except DATABASE_OUTAGES as exc:
        raise Unavailable("database", type(exc).__name__) from exc
    except REDIS_OUTAGES as exc:
        raise Unavailable("redis", type(exc).__name__) from exc
