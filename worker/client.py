"""The light API that host processes import: schedule a fallback, move read pointers, report presence.

Importing this module pulls in redis, SQLAlchemy and our config only: no Celery tasks, SMTP, push or
template code. Nothing connects at import time; the first call does.

    from worker import client
    client.schedule_fallback(dialog_id, message_id)      # after committing a visitor message
    client.mark_read(dialog_id, manager_id, message_id)  # when a manager views the dialog
    client.presence.touch(manager_id, dialog_id)         # on admin connect and on every heartbeat
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

from notifier import ledger, snapshot
from notifier.config import Settings, get_settings
from notifier.db import get_engine
from notifier.outages import map_outages
from notifier.redis_conn import client_for, resolve_url
from notifier.store import AsyncStore, HotScript, Store
from notifier.validate import check_id, check_optional_id

if TYPE_CHECKING:
    from notifier.metrics.host import HostCollector

__all__ = [
    "Presence",
    "add_team_member",
    "amark_read",
    "aschedule_fallback",
    "delete_subscription",
    "get_preferences",
    "mark_read",
    "metrics_collector",
    "presence",
    "remove_team_member",
    "save_subscription",
    "schedule_fallback",
    "set_language",
    "set_preferences",
    "stats",
]

log = logging.getLogger(__name__)

# Counters a host can export to its metrics; failures here mean the reconciler will have to catch up.
stats: dict[str, int] = {
    "scheduled": 0, "coalesced": 0, "schedule_failures": 0, "presence_failures": 0, "clear_failures": 0,
}

_local = threading.local()
# One asyncio client per event loop (a client is bound to the loop it was made on).
_async_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, AsyncStore]] = weakref.WeakKeyDictionary()


def _store() -> Store:
    settings = get_settings()
    store: Store | None = getattr(_local, "store", None)
    if store is None or _local.key != (os.getpid(), id(settings)):
        store = Store(client_for(resolve_url(settings)))
        _local.store, _local.key = store, (os.getpid(), id(settings))
        _local.hot = store.hot_schedule()
    return store


def _hot() -> HotScript:
    _store()
    hot: HotScript = _local.hot
    return hot


def _record(added: bool) -> bool:
    stats["scheduled" if added else "coalesced"] += 1
    return True


def _failed(dialog_id: int, message_id: int, exc: BaseException) -> bool:
    stats["schedule_failures"] += 1
    log.warning(
        "schedule failed dialog=%s message=%s reason=redis_unavailable error=%s; the reconciler will catch it",
        dialog_id, message_id, type(exc).__name__,
    )
    return False


def schedule_fallback(dialog_id: int, message_id: int) -> bool:
    """Open (or coalesce into) the dialog's pending check. One Redis round trip; never raises for an outage.

    Returns True when Redis took it, False when it could not (logged and counted).
    """
    check_id("dialog_id", dialog_id)
    check_id("message_id", message_id)
    settings = get_settings()
    try:
        return _record(_hot()(dialog_id, message_id, time.time(), settings.grace_seconds))
    except (redis.RedisError, OSError) as exc:
        return _failed(dialog_id, message_id, exc)


async def aschedule_fallback(dialog_id: int, message_id: int) -> bool:
    """`schedule_fallback` for asyncio hosts: the same script, on an asyncio Redis client per event loop."""
    check_id("dialog_id", dialog_id)
    check_id("message_id", message_id)
    settings = get_settings()
    try:
        added = await _async_store(settings).schedule(dialog_id, message_id, time.time(), settings.grace_seconds)
        return _record(added)
    except (redis.RedisError, OSError) as exc:
        return _failed(dialog_id, message_id, exc)


def _async_store(settings: Settings) -> AsyncStore:
    loop = asyncio.get_running_loop()
    cached = _async_stores.get(loop)
    if cached is None or cached[0] != id(settings):
        client = redis.asyncio.Redis.from_url(
            resolve_url(settings), socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
        )
        cached = _async_stores[loop] = (id(settings), AsyncStore(client))
    return cached[1]


def _engine() -> Any:
    return get_engine(get_settings().database_url)


def mark_read(dialog_id: int, manager_id: int, message_id: int) -> None:
    """The manager has read the dialog up to `message_id` (pointers only move forward). Call it when they
    answer too, with their answer's id: a notification already on any manager's screen is then cleared.

    Bad ids raise InvalidInput; a database outage raises notifier.errors.Unavailable."""
    with map_outages():
        ledger.mark_read(_engine(), dialog_id, manager_id, message_id)
    try:  # clearing a shown notification is a courtesy: a Redis outage must not fail the read
        _store().request_clear(dialog_id, time.time())
    except (redis.RedisError, OSError) as exc:
        stats["clear_failures"] += 1
        log.warning("clear request failed dialog=%s error=%s", dialog_id, type(exc).__name__)


async def amark_read(dialog_id: int, manager_id: int, message_id: int) -> None:
    await asyncio.to_thread(mark_read, dialog_id, manager_id, message_id)


def save_subscription(manager_id: int, subscription: dict[str, Any], user_agent: str | None = None) -> int:
    """Store a browser's `PushSubscription.toJSON()` for this manager (same endpoint again: updated, and it
    now belongs to this manager). Returns its id.

    Refuses malformed keys and endpoints that are not https on an allowed push service with InvalidInput.
    """
    settings = get_settings()
    with map_outages():
        return ledger.save_subscription(_engine(), manager_id, subscription, user_agent, settings.push_allowed_hosts)


def delete_subscription(endpoint: str, manager_id: int | None = None) -> bool:
    """Forget a subscription (the browser unsubscribed); with `manager_id`, only theirs. True if one was."""
    with map_outages():
        return ledger.delete_subscription(_engine(), endpoint, manager_id)


def add_team_member(owner_id: int, user_id: int) -> None:
    """`user_id` manages `owner_id`'s dialogs with them: notified, and admitted by the tenant guard."""
    with map_outages():
        ledger.add_team_member(_engine(), owner_id, user_id)


def remove_team_member(owner_id: int, user_id: int) -> bool:
    """The opposite of add_team_member; notifications already queued for them are dropped at send time."""
    with map_outages():
        return ledger.remove_team_member(_engine(), owner_id, user_id)


def set_language(manager_id: int, language: str | None) -> None:
    with map_outages():
        ledger.set_language(_engine(), manager_id, language)


def get_preferences(manager_id: int) -> dict[str, Any]:
    """The manager's stored preferences, every field present, None meaning "the default":
    {"push", "email", "language", "time_zone", "quiet_hours", "muted_dialogs"}."""
    check_id("manager_id", manager_id)
    with map_outages(), _engine().connect() as conn:
        return snapshot.load_stored(conn, [manager_id])[manager_id].as_json()


def set_preferences(manager_id: int, **fields: Any) -> dict[str, Any]:
    """Change some preferences (the others stay); returns them all, as get_preferences does.

    push/email: True, False or None; language: "ru", "en" or None; time_zone: an IANA name or None;
    quiet_hours: {"start": "HH:MM", "end": "HH:MM"} in that zone, or None; muted_dialogs: dialog ids.
    Anything else, or a malformed value, raises InvalidInput naming it. Honoured at decision and send time."""
    with map_outages():
        ledger.set_preferences(_engine(), manager_id, fields)
    return get_preferences(manager_id)


class Presence:
    """Who is connected, shared by every API process through Redis; entries expire without heartbeats."""

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (redis.RedisError, OSError) as exc:
            stats["presence_failures"] += 1
            log.warning("presence %s failed error=%s", what, type(exc).__name__)

    def touch(self, manager_id: int, dialog_id: int | None = None) -> None:
        check_id("manager_id", manager_id)
        check_optional_id("dialog_id", dialog_id)
        ttl = get_settings().presence_ttl_seconds
        self._guard("touch", _store().touch_admin, manager_id, dialog_id, time.time(), ttl)

    def leave(self, manager_id: int, dialog_id: int | None = None) -> None:
        check_id("manager_id", manager_id)
        check_optional_id("dialog_id", dialog_id)
        self._guard("leave", _store().leave_admin, manager_id, dialog_id)

    def touch_site(self, dialog_id: int) -> None:
        check_id("dialog_id", dialog_id)
        self._guard("touch_site", _store().touch_site, dialog_id, time.time(), get_settings().presence_ttl_seconds)

    def leave_site(self, dialog_id: int) -> None:
        check_id("dialog_id", dialog_id)
        self._guard("leave_site", _store().leave_site, dialog_id)

    def connection_stats(self) -> dict[str, Any]:
        """Like the host's stats endpoint, but counted across every process.

        With Redis unreachable the counts are 0 and `presence_available` is False: a stats page never fails.
        """
        try:
            admin, site = _store().connection_counts(time.time())
        except (redis.RedisError, OSError) as exc:
            stats["presence_failures"] += 1
            log.warning("presence connection_stats failed error=%s", type(exc).__name__)
            return {"connection_details": {"admin_connections": 0, "site_connections": 0}, "presence_available": False}
        return {"connection_details": {"admin_connections": admin, "site_connections": site}, "presence_available": True}


presence = Presence()


def metrics_collector() -> HostCollector:
    """A prometheus-client collector of this process's `stats` for the host's own /metrics (read when scraped):
    `notifier_schedule_failures_total`, `notifier_schedules_total{result}`, `notifier_presence_failures_total`.

        prometheus_client.REGISTRY.register(client.metrics_collector())
    """
    from notifier.metrics.host import HostCollector

    return HostCollector(stats)
