"""The light API that host processes import: schedule a fallback, move read pointers, report presence.

Importing this module pulls in redis, SQLAlchemy and our config only: no Celery tasks, SMTP, push or
template code. Nothing connects at import time; the first call does.

    from worker import client
    client.schedule_fallback(dialog_id, message_id)      # after committing a visitor message
    client.mark_read(dialog_id, manager_id, message_id)  # when a manager views the dialog
    client.presence.touch(manager_id, dialog_id)         # on admin connect and on every heartbeat

asyncio hosts: `aschedule_fallback`, `amark_read`, `presence.atouch` ... and
`async with client.presence.connected(manager_id, dialog_id):` around an admin stream.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from notifier import ledger, snapshot
from notifier.config import get_settings
from notifier.decide import visible_tenants
from notifier.enums import Channel
from notifier.offload import run_blocking
from notifier.outages import map_outages
from notifier.unsubscribe import read_token
from notifier.validate import check_id
from worker._conn import aclose, async_store, hot, stats, store
from worker._conn import engine as _engine
from worker.presence import Presence

if TYPE_CHECKING:
    from notifier.metrics.host import HostCollector

__all__ = [
    "Presence",
    "aclose",
    "add_team_member",
    "amark_read",
    "amay_see_dialog",
    "amissed",
    "aschedule_fallback",
    "delete_subscription",
    "get_preferences",
    "mark_read",
    "may_see_dialog",
    "metrics_collector",
    "missed",
    "presence",
    "remove_team_member",
    "save_subscription",
    "schedule_fallback",
    "set_language",
    "set_preferences",
    "stats",
    "unsubscribe",
]

log = logging.getLogger(__name__)


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
        return _record(hot()(dialog_id, message_id, time.time(), settings.grace_seconds))
    except (redis.RedisError, OSError) as exc:
        return _failed(dialog_id, message_id, exc)


async def aschedule_fallback(dialog_id: int, message_id: int) -> bool:
    """`schedule_fallback` for asyncio hosts: the same script, on an asyncio Redis client per event loop."""
    check_id("dialog_id", dialog_id)
    check_id("message_id", message_id)
    settings = get_settings()
    try:
        added = await async_store(settings).schedule(dialog_id, message_id, time.time(), settings.grace_seconds)
        return _record(added)
    except (redis.RedisError, OSError) as exc:
        return _failed(dialog_id, message_id, exc)


def mark_read(dialog_id: int, manager_id: int, message_id: int) -> None:
    """The manager has read the dialog up to `message_id` (pointers only move forward). Call it when they
    answer too, with their answer's id: a notification already on any manager's screen is then cleared.

    Bad ids raise InvalidInput; a database outage raises notifier.errors.Unavailable."""
    with map_outages():
        ledger.mark_read(_engine(), dialog_id, manager_id, message_id)
    try:  # clearing a shown notification is a courtesy: a Redis outage must not fail the read
        store().request_clear(dialog_id, time.time())
    except (redis.RedisError, OSError) as exc:
        stats["clear_failures"] += 1
        log.warning("clear request failed dialog=%s error=%s", dialog_id, type(exc).__name__)


async def amark_read(dialog_id: int, manager_id: int, message_id: int) -> None:
    """`mark_read` for asyncio hosts, on our bounded database thread pool (`notifier.offload`)."""
    await run_blocking(mark_read, dialog_id, manager_id, message_id)


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


def unsubscribe(token: str) -> tuple[int, Channel]:
    """One-click unsubscribe (RFC 8058): turn off the channel a signed link names, for the manager it names.
    Returns (manager id, channel); a forged, altered, malformed or expired token raises InvalidInput and
    changes nothing. Needs NOTIFIER_SECRET_KEY (ConfigError without it)."""
    manager_id, channel = read_token(get_settings().secret_key, token, time.time())
    with map_outages():
        ledger.set_preferences(_engine(), manager_id, {"email" if channel is Channel.EMAIL else "push": False})
    log.info("unsubscribe manager=%s channel=%s reason=one_click", manager_id, channel.value)
    return manager_id, channel


def may_see_dialog(manager_id: int, dialog_id: int) -> bool:
    """May this manager see the dialog: its tenant's owner, a registered team member, its assigned manager
    if the tenant guard admits them, or a `role='admin'` user (`notifier.decide.may_see`). False for a
    dialog that does not exist, too: answer both the same way (404), so nobody learns which ids exist."""
    check_id("manager_id", manager_id)
    check_id("dialog_id", dialog_id)
    with map_outages(), _engine().connect() as conn:
        return snapshot.visible_dialog(conn, manager_id, dialog_id) is not None


async def amay_see_dialog(manager_id: int, dialog_id: int) -> bool:
    return await run_blocking(may_see_dialog, manager_id, dialog_id)


def missed(manager_id: int) -> list[dict[str, Any]]:
    """What this manager missed: every dialog they may see with visitor messages above their read pointer
    and above the last manager answer, oldest waiting first, at most `snapshot.MISSED_LIMIT` (200).

    Each: {"dialog_id", "unread" (exact), "first_unread_message_id", "last_message_id", "waiting_since"
    (ISO 8601 UTC of the first unread message, or None)}. With NOTIFIER_SKIP_AI_HANDLED on (the default),
    only dialogs that need a human count, as for notifications."""
    check_id("manager_id", manager_id)
    settings = get_settings()
    with map_outages(), _engine().connect() as conn:
        viewer, member_of = snapshot.load_viewer(conn, manager_id)
        tenants = visible_tenants(viewer, member_of)
        found = snapshot.load_missed(conn, manager_id, tenants, settings.ai_handling_skips, time.time())
    return [
        {
            "dialog_id": m.dialog_id,
            "unread": m.unread,
            "first_unread_message_id": m.first_unread_message_id,
            "last_message_id": m.last_message_id,
            "waiting_since": None if m.waiting_since is None else _iso(m.waiting_since),
        }
        for m in found
    ]


async def amissed(manager_id: int) -> list[dict[str, Any]]:
    return await run_blocking(missed, manager_id)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


presence = Presence()


def metrics_collector() -> HostCollector:
    """A prometheus-client collector of this process's `stats` for the host's own /metrics (read when scraped):
    `notifier_schedule_failures_total`, `notifier_schedules_total{result}`, `notifier_presence_failures_total`.

        prometheus_client.REGISTRY.register(client.metrics_collector())
    """
    from notifier.metrics.host import HostCollector

    return HostCollector(stats)
