"""Everything we keep in Redis: pending checks, the dispatch lease, presence. Scripts run in one round trip.

Keys (all under `notifier:`):
- `pending`  zset dialog_id -> due time (epoch s). Coalescing: the earliest deadline wins (ZADD LT), so a
  burst makes one check, and a new message never waits behind a later escalation recheck.
- `inflight` zset dialog_id -> lease expiry; a check popped by a dispatcher but not finished yet. An
  expired lease puts the dialog back into `pending`, so a killed worker loses nothing.
- `seen`     hash dialog_id -> "message=time,message=time,..." when each message was first scheduled: each
  recipient's burst starts at its first unread message, so deadlines hold even after a read mid-dialog.
  One field per dialog (not a key per dialog): creating keys on the hot path costs the tail latency.
- `latest`   hash dialog_id -> newest message id scheduled (forward only).
- `presence:admin` zset "manager:dialog" (or "manager:-") -> expiry; `presence:site` zset dialog -> expiry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, cast

import redis

from notifier.config import DEFAULT_REDIS_URL, Settings

log = logging.getLogger(__name__)

PREFIX = "notifier:"
PENDING = PREFIX + "pending"
INFLIGHT = PREFIX + "inflight"
SEEN = PREFIX + "seen"
SEEN_CAP = 4000  # characters (~150 messages); later ones count as unseen, i.e. due at once
LATEST = PREFIX + "latest"
PRESENCE_ADMIN = PREFIX + "presence:admin"
PRESENCE_SITE = PREFIX + "presence:site"

# KEYS: pending, seen, latest. ARGV: dialog, message, seen_at, grace, seen cap. Returns 1 for a new check.
SCHEDULE_LUA = """
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
local entry = ARGV[2] .. '=' .. ARGV[3]
local seen = redis.call('HGET', KEYS[2], ARGV[1])
if not seen then
  redis.call('HSET', KEYS[2], ARGV[1], entry)
elseif string.len(seen) < tonumber(ARGV[5]) and not string.find(',' .. seen, ',' .. ARGV[2] .. '=', 1, true) then
  redis.call('HSET', KEYS[2], ARGV[1], seen .. ',' .. entry)
end
return redis.call('ZADD', KEYS[1], 'LT', tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
"""

# Expired leases go back to pending first, then due members move to inflight with a fresh lease;
# one script, so two dispatchers can never pop the same dialog.
DISPATCH_LUA = """
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], 'LT', now, m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), m)
end
return due
"""

# A finished check: drop the lease; schedule the recheck (earliest wins); or, when nothing is left to do
# and no newer message is pending, forget the dialog's seen times.
# KEYS: pending, inflight, seen, latest. ARGV: dialog, recheck_at or ''.
FINISH_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], 'LT', tonumber(ARGV[2]), ARGV[1])
  return 1
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return 0
"""


SCHEDULE_KEYS = [PENDING, SEEN, LATEST]


def schedule_args(dialog_id: int, message_id: int, seen_at: float, grace: float) -> list[int | float]:
    """ARGV of SCHEDULE_LUA (shared by the sync and asyncio clients)."""
    return [dialog_id, message_id, seen_at, grace, SEEN_CAP]


def probe(url: str, timeout: float = 0.3) -> bool:
    """Does a Redis answer PING at `url` within `timeout`?"""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


_resolved: dict[tuple[str | None, str], str] = {}
_resolve_lock = threading.Lock()


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
                from notifier import embedded_redis

                _resolved[key] = embedded_redis.ensure_running(settings.redis_embedded_dir)
                log.info("no redis at %s: using the embedded server", DEFAULT_REDIS_URL)
        return _resolved[key]


def broker_url(redis_url: str) -> str:
    """Celery/kombu spell a unix socket `redis+socket://`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


_clients: dict[tuple[int, str], redis.Redis] = {}
_clients_lock = threading.Lock()


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


class HotScript:
    """SCHEDULE_LUA on one dedicated connection per thread: the host's hot path skips redis-py's pool
    checkout, liveness probe and retry wrapper (about a third of a call's client time). Not thread-safe
    by design: each thread owns one. Any error drops the connection; the next call reconnects."""

    def __init__(self, client: redis.Redis) -> None:
        self._conn: Any = client.connection_pool.make_connection()  # redis-py leaves Connection untyped
        self._sha = hashlib.sha1(SCHEDULE_LUA.encode()).hexdigest()

    def __call__(self, dialog_id: int, message_id: int, seen_at: float, grace: float) -> bool:
        argv = (*SCHEDULE_KEYS, *schedule_args(dialog_id, message_id, seen_at, grace))
        try:
            return self._run(argv)
        except (redis.ConnectionError, ConnectionError):
            # A connection Redis closed (restart, idle timeout) fails on first use: reconnect once. The
            # script is idempotent, so a retry is safe; a timeout is not retried, to bound the wait.
            self._conn.disconnect()
            return self._run(argv)

    def _run(self, argv: tuple[object, ...]) -> bool:
        conn = self._conn
        try:
            try:
                conn.send_command("EVALSHA", self._sha, 3, *argv)
                return bool(conn.read_response())
            except redis.exceptions.NoScriptError:  # a restarted or flushed Redis forgot the script
                conn.send_command("EVAL", SCHEDULE_LUA, 3, *argv)
                return bool(conn.read_response())
        except (redis.RedisError, OSError):
            conn.disconnect()
            raise

    def close(self) -> None:
        self._conn.disconnect()


def parse_seen(raw: str | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for item in (raw or "").split(","):
        message, _, at = item.partition("=")
        if message and at:
            out.setdefault(int(message), float(at))
    return out


@dataclass
class Store:
    """Typed operations on our keys; cheap to build, holds only the client and the loaded scripts."""

    r: redis.Redis

    def __post_init__(self) -> None:
        self._schedule = self.r.register_script(SCHEDULE_LUA)
        self._dispatch = self.r.register_script(DISPATCH_LUA)
        self._finish = self.r.register_script(FINISH_LUA)

    def schedule(self, dialog_id: int, message_id: int, seen_at: float, grace: float) -> bool:
        """Returns True when this call opened a new pending check, False when it coalesced."""
        added = self._schedule(keys=SCHEDULE_KEYS, args=schedule_args(dialog_id, message_id, seen_at, grace))
        return bool(added)

    def dispatch(self, now: float, limit: int, lease: float) -> list[int]:
        return [int(m) for m in self._dispatch(keys=[PENDING, INFLIGHT], args=[now, limit, lease])]

    def finish(self, dialog_id: int, recheck_at: float | None) -> None:
        args: list[str | float] = [dialog_id, "" if recheck_at is None else repr(recheck_at)]
        self._finish(keys=[PENDING, INFLIGHT, SEEN, LATEST], args=args)

    def seen_times(self, dialog_id: int) -> dict[int, float]:
        """message_id -> when it was first scheduled, for the dialog's live burst(s)."""
        raw = cast(str | None, self.r.hget(SEEN, str(dialog_id)))
        return parse_seen(raw)

    def pending(self, limit: int = 50) -> list[tuple[int, float]]:
        rows = cast(list[tuple[str, float]], self.r.zrange(PENDING, 0, limit - 1, withscores=True))
        return [(int(m), float(s)) for m, s in rows]

    def counts(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(PENDING)
        pipe.zcard(INFLIGHT)
        pending, inflight = pipe.execute()
        return {"pending": int(pending), "inflight": int(inflight)}

    # Presence: one expiring zset member per connection kind; counts come from ZCOUNT over live scores.
    def touch_admin(self, manager_id: int, dialog_id: int | None, now: float, ttl: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(PRESENCE_ADMIN, {_admin_member(manager_id, dialog_id): now + ttl})
        pipe.zremrangebyscore(PRESENCE_ADMIN, "-inf", now)
        pipe.execute()

    def leave_admin(self, manager_id: int, dialog_id: int | None) -> None:
        self.r.zrem(PRESENCE_ADMIN, _admin_member(manager_id, dialog_id))

    def touch_site(self, dialog_id: int, now: float, ttl: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(PRESENCE_SITE, {str(dialog_id): now + ttl})
        pipe.zremrangebyscore(PRESENCE_SITE, "-inf", now)
        pipe.execute()

    def leave_site(self, dialog_id: int) -> None:
        self.r.zrem(PRESENCE_SITE, str(dialog_id))

    def connection_counts(self, now: float) -> tuple[int, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.zcount(PRESENCE_ADMIN, f"({now}", "+inf")
        pipe.zcount(PRESENCE_SITE, f"({now}", "+inf")
        admin, site = pipe.execute()
        return int(admin), int(site)

    def online_on_dialog(self, manager_ids: list[int], dialog_id: int, now: float) -> set[int]:
        if not manager_ids:
            return set()
        scores = cast(list[float | None], self.r.zmscore(PRESENCE_ADMIN, [_admin_member(m, dialog_id) for m in manager_ids]))
        return {m for m, s in zip(manager_ids, scores, strict=True) if s is not None and float(s) > now}


def _admin_member(manager_id: int, dialog_id: int | None) -> str:
    return f"{manager_id}:{'-' if dialog_id is None else dialog_id}"
