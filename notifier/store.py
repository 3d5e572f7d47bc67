"""Everything we keep in Redis, and every command on it. Scripts run in one round trip.

Keys (all under `notifier:`):
- `pending`  zset dialog_id -> due time (epoch s). Coalescing: the earliest deadline wins (ZADD LT), so a
  burst makes one check, and a new message never waits behind a later escalation recheck.
- `inflight` zset dialog_id -> lease expiry; a check popped by a dispatcher but not finished yet. An
  expired lease puts the dialog back into `pending`, so a killed worker loses nothing.
- `running`  hash dialog_id -> 1 while a worker has started its check; an expired lease of a started check
  counts as a failed attempt (its worker died or hung), one of queue wait does not.
- `failures` hash dialog_id -> failed check attempts in a row; `parked` hash dialog_id -> JSON
  {"at", "attempts", "error"} once they reach NOTIFIER_MAX_ATTEMPTS: a parked dialog is not retried
  until a new message schedules it again, and the reconciler leaves it alone.
- `seen:<bucket>` hashes of 100 dialogs each (bucket = dialog_id // 100, field = dialog_id % 100) -> when
  each message was first scheduled, packed: "m0@t0" then ",+dm@dt" per later message (id as a delta from m0,
  time in milliseconds as a delta from t0; ids of 15 digits or more are written whole, unsigned). Each
  recipient's burst starts at its first unread message, so deadlines hold even after a read mid-dialog.
  Small buckets with short values stay in Redis's compact listpack encoding (up to 128 fields of up to 64
  bytes: a burst of about five messages); see `seen_key`. A longer value moves to `seen:long` (hash
  dialog_id -> the same packed value), so one long burst never turns its bucket into a hashtable. The hot
  path creates a key once per hundred dialogs, not per dialog (creating keys costs tail latency). The
  newest scheduled message is the largest id.
- Legacy layout (before issue 10; read until it drains): `seen` hash dialog_id -> "message=time,..." and `latest`
  hash dialog_id -> newest message id. Nothing writes them any more; `seen_times` merges the legacy entry,
  and a finished check deletes it, so pending dialogs scheduled by an older version lose nothing.
- `presence:admin` zset "manager:dialog" (or "manager:-") -> expiry; `presence:site` zset dialog -> expiry.
- `reconcile:watermark` the reconciler's id watermark in the host's `dialog_messages`.
- `clears`   zset dialog_id -> when a read was reported: the dispatcher hands these to a task that sends
  "clear" pushes to managers who were pushed about the dialog and have read it (or it was answered).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.asyncio

PREFIX = "notifier:"
PENDING = PREFIX + "pending"
INFLIGHT = PREFIX + "inflight"
RUNNING = PREFIX + "running"
FAILURES = PREFIX + "failures"
PARKED = PREFIX + "parked"
SEEN_PREFIX = PREFIX + "seen:"
SEEN_BUCKET = 100  # dialogs per seen hash: under Redis's default hash-max-listpack-entries (128)
SEEN_CAP = 4000  # characters (~400 messages); later ones count as unseen, i.e. due at once
SEEN_PACKED_MAX = 64  # bytes: Redis's default hash-max-listpack-value; longer values go to SEEN_LONG
SEEN_LONG = PREFIX + "seen:long"
LEGACY_SEEN = PREFIX + "seen"
LEGACY_LATEST = PREFIX + "latest"
PRESENCE_ADMIN = PREFIX + "presence:admin"
PRESENCE_SITE = PREFIX + "presence:site"
WATERMARK = PREFIX + "reconcile:watermark"
CLEARS = PREFIX + "clears"

# KEYS: pending, seen bucket, long seen. ARGV: dialog, field, message, seen_at (ms), grace (s), seen cap,
# packed limit. Returns 1 for a new check. Message ids of at most 14 digits are stored as deltas from the
# burst's first: Lua numbers are doubles, exact for such ids and their differences; longer ids are written
# whole and never computed with. Times are whole milliseconds (exact in a double for millions of years).
# A value that outgrows the packed limit moves to `seen:long`: one long burst would otherwise turn its
# whole bucket into a hashtable until the bucket empties.
SCHEDULE_LUA = """
local v = redis.call('HGET', KEYS[2], ARGV[2])
local long = false
if not v then
  v = redis.call('HGET', KEYS[3], ARGV[1])
  long = v and true or false
end
local new = nil
if not v then
  new = ARGV[3] .. '@' .. ARGV[4]
elseif string.len(v) < tonumber(ARGV[6]) then
  local m0, t0 = string.match(v, '^(%d+)@(%-?%d+)')
  if ARGV[3] ~= m0 then
    local id = ARGV[3]
    if string.len(id) <= 14 and string.len(m0) <= 14 then
      local d = tonumber(id) - tonumber(m0)
      id = (d > 0 and '+' or '') .. string.format('%d', d)
    end
    if not string.find(v, ',' .. id .. '@', 1, true) then
      new = v .. ',' .. id .. '@' .. string.format('%d', tonumber(ARGV[4]) - tonumber(t0))
    end
  end
end
if new then
  if long then
    redis.call('HSET', KEYS[3], ARGV[1], new)
  elseif string.len(new) > tonumber(ARGV[7]) then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('HSET', KEYS[3], ARGV[1], new)
  else
    redis.call('HSET', KEYS[2], ARGV[2], new)
  end
end
return redis.call('ZADD', KEYS[1], 'LT', tonumber(ARGV[4]) / 1000 + tonumber(ARGV[5]), ARGV[1])
"""


def seen_key(dialog_id: int) -> tuple[str, str]:
    """(hash, field) holding a dialog's seen times: dialogs 1234500..1234599 share `notifier:seen:12345`.

    One small hash per hundred dialog ids instead of one field per dialog in one big hash: Redis keeps a
    small hash as one listpack (a few bytes per field) where a big one costs a dictionary entry and two
    strings per field. Pending dialogs are mostly recent, and recent dialog ids are close together."""
    bucket, slot = divmod(dialog_id, SEEN_BUCKET)
    return f"{SEEN_PREFIX}{bucket}", str(slot)


def seen_ms(seen_at: float) -> int:
    return round(seen_at * 1000)


# Expired leases go back to pending first (a started check's expiry counts as a failed attempt and may
# park it), then due members move to inflight with a fresh lease; one script, so two dispatchers can never
# pop the same dialog. KEYS: pending, inflight, running, failures, parked.
# ARGV: now, limit, lease, max attempts. Returns {due ids, parked ids}.
DISPATCH_LUA = """
local now = tonumber(ARGV[1])
local parked = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  local n = 0
  if redis.call('HDEL', KEYS[3], m) == 1 then n = redis.call('HINCRBY', KEYS[4], m, 1) end
  if n >= tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[1], m)
    redis.call('HSET', KEYS[5], m, cjson.encode({at = now, attempts = n,
      error = 'check lease expired while running: its worker died or hung'}))
    table.insert(parked, m)
  else
    redis.call('ZADD', KEYS[1], 'LT', now, m)
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), m)
end
return {due, parked}
"""

# A finished check: drop the lease and its failure record; schedule the recheck (earliest wins); or, when
# nothing is left to do and no newer message is pending, forget the dialog's seen times (wherever they
# are, the legacy layout included). KEYS: pending, inflight, seen bucket, long seen, legacy seen, legacy
# latest, running, failures, parked. ARGV: dialog, recheck_at or '', seen field.
FINISH_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[7], ARGV[1])
redis.call('HDEL', KEYS[8], ARGV[1])
redis.call('HDEL', KEYS[9], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], 'LT', tonumber(ARGV[2]), ARGV[1])
  return 1
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HDEL', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], ARGV[1])
end
return 0
"""

# A check that raised: count it; below the limit, retry it after an exponential backoff; at the limit,
# park it. KEYS: pending, inflight, running, failures, parked. ARGV: dialog, now, base delay, delay cap,
# max attempts, error. Returns the attempt count, negative when parked.
FAILED_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local n = redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
local now = tonumber(ARGV[2])
if n >= tonumber(ARGV[5]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[5], ARGV[1], cjson.encode({at = now, attempts = n, error = ARGV[6]}))
  return -n
end
local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (n - 1))
redis.call('ZADD', KEYS[1], 'LT', now + delay, ARGV[1])
return n
"""


def schedule_keys(dialog_id: int) -> list[str]:
    """KEYS of SCHEDULE_LUA."""
    return [PENDING, seen_key(dialog_id)[0], SEEN_LONG]


def schedule_args(dialog_id: int, message_id: int, seen_at: float, grace: float) -> list[int | float | str]:
    """ARGV of SCHEDULE_LUA (shared by the sync and asyncio clients)."""
    return [dialog_id, seen_key(dialog_id)[1], message_id, seen_ms(seen_at), grace, SEEN_CAP, SEEN_PACKED_MAX]


class HotScript:
    """SCHEDULE_LUA on one dedicated connection per thread: the host's hot path skips redis-py's pool
    checkout, liveness probe and retry wrapper (about a third of a call's client time). Not thread-safe
    by design: each thread owns one. Any error drops the connection; the next call reconnects."""

    def __init__(self, client: redis.Redis) -> None:
        self._conn: Any = client.connection_pool.make_connection()  # redis-py leaves Connection untyped
        self._sha = hashlib.sha1(SCHEDULE_LUA.encode()).hexdigest()

    def __call__(self, dialog_id: int, message_id: int, seen_at: float, grace: float) -> bool:
        argv = (*schedule_keys(dialog_id), *schedule_args(dialog_id, message_id, seen_at, grace))
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
    """message_id -> first scheduled time, from a packed value ("m0@t0,+dm@dt,...", see the module's doc)
    or a legacy one ("message=time,...")."""
    out: dict[int, float] = {}
    if not raw:
        return out
    if "@" not in raw:
        for item in raw.split(","):
            message, _, at = item.partition("=")
            if message and at:
                out.setdefault(int(message), float(at))
        return out
    first, *rest = raw.split(",")
    m0, _, t0 = first.partition("@")
    base_id, base_ms = int(m0), int(t0)
    out[base_id] = base_ms / 1000
    for item in rest:
        message, _, dt = item.partition("@")
        if not message or not dt:
            continue
        mid = base_id + int(message) if message[0] in "+-" else int(message)
        out.setdefault(mid, (base_ms + int(dt)) / 1000)
    return out


def merge_seen(*parts: dict[int, float]) -> dict[int, float]:
    """Several records of the same dialog (packed and legacy): the earliest time of each message."""
    out: dict[int, float] = {}
    for part in parts:
        for message, at in part.items():
            out[message] = min(at, out.get(message, at))
    return out


@dataclass(frozen=True)
class Dispatched:
    due: list[int]
    parked: list[int] = field(default_factory=list)


@dataclass
class Store:
    """Typed operations on our keys; cheap to build, holds only the client and the loaded scripts."""

    r: redis.Redis

    def __post_init__(self) -> None:
        self._schedule = self.r.register_script(SCHEDULE_LUA)
        self._dispatch = self.r.register_script(DISPATCH_LUA)
        self._finish = self.r.register_script(FINISH_LUA)
        self._failed = self.r.register_script(FAILED_LUA)

    def hot_schedule(self) -> HotScript:
        """A dedicated connection running SCHEDULE_LUA, for one host thread's hot path."""
        return HotScript(self.r)

    # Pending checks.
    def schedule(self, dialog_id: int, message_id: int, seen_at: float, grace: float) -> bool:
        """Returns True when this call opened a new pending check, False when it coalesced."""
        added = self._schedule(keys=schedule_keys(dialog_id), args=schedule_args(dialog_id, message_id, seen_at, grace))
        return bool(added)

    def dispatch(self, now: float, limit: int, lease: float, max_attempts: int) -> Dispatched:
        due, parked = self._dispatch(keys=[PENDING, INFLIGHT, RUNNING, FAILURES, PARKED], args=[now, limit, lease, max_attempts])
        return Dispatched([int(m) for m in due], [int(m) for m in parked])

    def begin_checks(self, dialog_ids: list[int], now: float, lease: float) -> None:
        """A worker starts these checks: a fresh lease each, and an expiry from now on counts as a failure."""
        if not dialog_ids:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(INFLIGHT, {str(d): now + lease for d in dialog_ids})
        pipe.hset(RUNNING, mapping={str(d): 1 for d in dialog_ids})
        pipe.execute()

    def finish(self, dialog_id: int, recheck_at: float | None) -> None:
        self.finish_many([(dialog_id, recheck_at)])

    def finish_many(self, checks: list[tuple[int, float | None]]) -> None:
        """`finish` for each (dialog, recheck_at) of a chunk of checks, in one round trip (each script runs
        on its own, as when called alone)."""
        if not checks:
            return
        pipe = self.r.pipeline(transaction=False)
        for dialog_id, recheck_at in checks:
            bucket, slot = seen_key(dialog_id)
            args: list[str | float] = [dialog_id, "" if recheck_at is None else repr(recheck_at), slot]
            keys = [PENDING, INFLIGHT, bucket, SEEN_LONG, LEGACY_SEEN, LEGACY_LATEST, RUNNING, FAILURES, PARKED]
            self._finish(keys=keys, args=args, client=pipe)
        pipe.execute()

    def check_failed(
        self, dialog_id: int, now: float, base_delay: float, max_delay: float, max_attempts: int, error: str
    ) -> tuple[int, bool]:
        """Count a failed check: (attempts so far, parked?). Below the limit it is pending again after
        `base_delay * 2**(attempts - 1)` seconds (at most `max_delay`); at the limit it is parked."""
        keys = [PENDING, INFLIGHT, RUNNING, FAILURES, PARKED]
        n = int(self._failed(keys=keys, args=[dialog_id, now, base_delay, max_delay, max_attempts, error[:500]]))
        return abs(n), n < 0

    def parked(self, dialog_id: int) -> dict[str, Any] | None:
        raw = cast(str | None, self.r.hget(PARKED, str(dialog_id)))
        return json.loads(raw) if raw else None

    def seen_times(self, dialog_id: int) -> dict[int, float]:
        """message_id -> when it was first scheduled, for the dialog's live burst(s); an entry an older
        version wrote in the legacy layout counts too."""
        return self.seen_times_many([dialog_id])[dialog_id]

    def seen_times_many(self, dialog_ids: list[int]) -> dict[int, dict[int, float]]:
        """`seen_times` of several dialogs (a chunk of checks) in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for dialog_id in dialog_ids:
            pipe.hget(*seen_key(dialog_id))
            pipe.hget(SEEN_LONG, str(dialog_id))
            pipe.hget(LEGACY_SEEN, str(dialog_id))
        raw = pipe.execute()
        return {d: merge_seen(*(parse_seen(x) for x in raw[3 * i : 3 * i + 3])) for i, d in enumerate(dialog_ids)}

    def latest(self, dialog_id: int) -> int | None:
        """The newest message id scheduled for the dialog while it has seen times (None: none)."""
        legacy = cast(str | None, self.r.hget(LEGACY_LATEST, str(dialog_id)))
        ids = [*self.seen_times(dialog_id), *([int(legacy)] if legacy else [])]
        return max(ids) if ids else None

    def pending(self, limit: int = 50) -> list[tuple[int, float]]:
        rows = cast(list[tuple[str, float]], self.r.zrange(PENDING, 0, limit - 1, withscores=True))
        return [(int(m), float(s)) for m, s in rows]

    def counts(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(PENDING)
        pipe.zcard(INFLIGHT)
        pipe.hlen(PARKED)
        pending, inflight, parked = pipe.execute()
        return {"pending": int(pending), "inflight": int(inflight), "parked": int(parked)}

    def queue_gauges(self) -> tuple[int, int, int, float | None]:
        """(pending, inflight, parked, earliest due time or None) in one round trip: the metrics read
        these when scraped, never on a hot path."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(PENDING)
        pipe.zcard(INFLIGHT)
        pipe.hlen(PARKED)
        pipe.zrange(PENDING, 0, 0, withscores=True)
        pending, inflight, parked, first = pipe.execute()
        return int(pending), int(inflight), int(parked), float(first[0][1]) if first else None

    def live_or_parked(self, dialog_ids: list[int]) -> set[int]:
        """Dialogs with a pending or inflight check (their decision is coming), or parked ones."""
        if not dialog_ids:
            return set()
        members = [str(i) for i in dialog_ids]
        pipe = self.r.pipeline(transaction=False)
        pipe.zmscore(PENDING, members)
        pipe.zmscore(INFLIGHT, members)
        pipe.hmget(PARKED, members)
        pending, inflight, parked = pipe.execute()
        return {i for i, p, f, k in zip(dialog_ids, pending, inflight, parked, strict=True) if p or f or k}

    # Clear-on-read requests.
    def request_clear(self, dialog_id: int, now: float) -> None:
        self.r.zadd(CLEARS, {str(dialog_id): now}, nx=True)

    def pop_clears(self, limit: int) -> list[int]:
        return [int(m) for m, _ in cast(list[tuple[str, float]], self.r.zpopmin(CLEARS, limit))]

    # The reconciler's watermark.
    def watermark(self) -> int | None:
        raw = cast(str | None, self.r.get(WATERMARK))
        return int(raw) if raw is not None else None

    def set_watermark(self, message_id: int) -> None:
        self.r.set(WATERMARK, message_id)

    # Presence: one expiring zset member per connection kind; counts come from ZCOUNT over live scores.
    def touch_admin(self, manager_id: int, dialog_id: int | None, now: float, ttl: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(PRESENCE_ADMIN, {admin_member(manager_id, dialog_id): now + ttl})
        pipe.zremrangebyscore(PRESENCE_ADMIN, "-inf", now)
        pipe.execute()

    def leave_admin(self, manager_id: int, dialog_id: int | None) -> None:
        self.r.zrem(PRESENCE_ADMIN, admin_member(manager_id, dialog_id))

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
        return self.online_on_dialogs({dialog_id: manager_ids}, now)[dialog_id]

    def online_on_dialogs(self, managers: Mapping[int, list[int]], now: float) -> dict[int, set[int]]:
        """dialog -> those of its managers with the admin panel open on it now: one round trip for all."""
        pairs = [(d, m) for d, ids in managers.items() for m in ids]
        out: dict[int, set[int]] = {d: set() for d in managers}
        if not pairs:
            return out
        scores = cast(list[float | None], self.r.zmscore(PRESENCE_ADMIN, [admin_member(m, d) for d, m in pairs]))
        for (d, m), score in zip(pairs, scores, strict=True):
            if score is not None and float(score) > now:
                out[d].add(m)
        return out

    # What the server is configured to do with our keys (the worker's start-up check).
    def server_config(self) -> dict[str, str]:
        """maxmemory-policy, appendonly and save; redis.ResponseError when CONFIG is disabled."""
        config: dict[str, str] = {}
        for name in ("maxmemory-policy", "appendonly", "save"):
            config.update(cast(dict[str, str], self.r.config_get(name)))
        return config


@dataclass
class AsyncStore:
    """The host's asyncio side of the same keys and scripts, on a `redis.asyncio` client (one per loop)."""

    r: redis.asyncio.Redis

    def __post_init__(self) -> None:
        self._schedule = self.r.register_script(SCHEDULE_LUA)

    async def schedule(self, dialog_id: int, message_id: int, seen_at: float, grace: float) -> bool:
        keys, args = schedule_keys(dialog_id), schedule_args(dialog_id, message_id, seen_at, grace)
        return bool(await self._schedule(keys=keys, args=args))

    async def request_clear(self, dialog_id: int, now: float) -> None:
        await self.r.zadd(CLEARS, {str(dialog_id): now}, nx=True)

    async def touch_admin(self, manager_id: int, dialog_id: int | None, now: float, ttl: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(PRESENCE_ADMIN, {admin_member(manager_id, dialog_id): now + ttl})
        pipe.zremrangebyscore(PRESENCE_ADMIN, "-inf", now)
        await pipe.execute()

    async def leave_admin(self, manager_id: int, dialog_id: int | None) -> None:
        await self.r.zrem(PRESENCE_ADMIN, admin_member(manager_id, dialog_id))

    async def touch_site(self, dialog_id: int, now: float, ttl: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(PRESENCE_SITE, {str(dialog_id): now + ttl})
        pipe.zremrangebyscore(PRESENCE_SITE, "-inf", now)
        await pipe.execute()

    async def leave_site(self, dialog_id: int) -> None:
        await self.r.zrem(PRESENCE_SITE, str(dialog_id))

    async def connection_counts(self, now: float) -> tuple[int, int]:
        pipe = self.r.pipeline(transaction=False)
        pipe.zcount(PRESENCE_ADMIN, f"({now}", "+inf")
        pipe.zcount(PRESENCE_SITE, f"({now}", "+inf")
        admin, site = await pipe.execute()
        return int(admin), int(site)

    async def close(self) -> None:
        """Close the client's connections (a host's shutdown; `aclose` needs redis-py 5.0.1 or later)."""
        await self.r.aclose()


def admin_member(manager_id: int, dialog_id: int | None) -> str:
    return f"{manager_id}:{'-' if dialog_id is None else dialog_id}"
