"""The connection side of Redis: which URL, one pool per process, the embedded fallback.

What we keep in Redis, and every command on it, lives in `notifier.store`; this module only hands out
clients with explicit timeouts.
"""

from __future__ import annotations

import logging
import os
import threading

import redis

from notifier.config import DEFAULT_REDIS_URL, Settings

log = logging.getLogger(__name__)

_resolved: dict[tuple[str | None, str], str] = {}
_resolve_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def probe(url: str, timeout: float = 0.3) -> bool:
    """Does a Redis answer PING at `url` within `timeout`?"""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def resolve_url(settings: Settings) -> str:
    """NOTIFIER_REDIS_URL if set; else a Redis at localhost:6379 if one answers; else the embedded one."""
    if settings.redis_url:
        return settings.redis_url
    key = (settings.redis_url, str(settings.redis_embedded_dir))
    with _resolve_lock:
        if key not in _resolved:
            if probe(DEFAULT_REDIS_URL):
                _resolved[key] = DEFAULT_REDIS_URL
            else:
                from notifier import embedded_redis  # only on this fallback path: it starts a server

                _resolved[key] = embedded_redis.ensure_running(settings.redis_embedded_dir)
                log.info("no redis at %s: using the embedded server", DEFAULT_REDIS_URL)
        return _resolved[key]


def broker_url(redis_url: str) -> str:
    """Celery/kombu spell a unix socket `redis+socket://`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def client_for(url: str, timeout: float = 1.0) -> redis.Redis:
    """One connection pool per process and URL, with explicit timeouts so nobody hangs on a dead Redis."""
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    health_check_interval=30,
                    decode_responses=True,
                )
                _clients[key] = client
    return client


def reset_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
    with _resolve_lock:
        _resolved.clear()
