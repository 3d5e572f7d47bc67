"""Checks a worker makes before it takes work: Redis must not evict our keys, and should persist them."""

from __future__ import annotations

import logging

import redis

from notifier.config import Settings
from notifier.errors import ConfigError
from notifier.store import Store

log = logging.getLogger(__name__)

# Policies that may evict keys without a TTL, which is every key we keep.
EVICTING = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


def check_redis(store: Store, settings: Settings) -> list[str]:
    """Raise ConfigError for an evicting Redis; return warnings (persistence off) for the caller to log."""
    try:
        config = store.server_config()
    except redis.ResponseError:
        # Managed services often disable CONFIG; we cannot tell, so we say so and go on.
        return ["cannot read Redis CONFIG (disabled?): make sure maxmemory-policy is noeviction and AOF is on"]
    policy = str(config.get("maxmemory-policy", ""))
    if policy in EVICTING:
        raise ConfigError(
            f"Redis maxmemory-policy is {policy}: it would evict pending checks and presence. "
            "Set maxmemory-policy noeviction (or a volatile-* policy) before starting the worker."
        )
    warnings = []
    persistent = str(config.get("appendonly", "no")) == "yes" or bool(str(config.get("save", "")).strip())
    if not persistent and settings.environment != "development":
        warnings.append(
            "Redis persistence is off (appendonly no, no save points): a Redis restart loses pending checks "
            "until the reconciler finds them again; turn AOF on (appendonly yes)"
        )
    return warnings


def check_push(settings: Settings) -> None:
    """With a VAPID key set, push is on: the key must load and the subject must be a contact (ConfigError)."""
    if not settings.vapid_private_key:
        if settings.vapid_subject:
            log.warning("NOTIFIER_VAPID_SUBJECT is set but NOTIFIER_VAPID_PRIVATE_KEY is not: Web Push is off")
        return
    from notifier.pushkeys import check_subject, load_vapid_private_key

    load_vapid_private_key(settings.vapid_private_key)
    check_subject(settings.vapid_subject)


def notes(settings: Settings) -> list[str]:
    """What the worker says once at start-up about optional features that are off."""
    out = []
    if not settings.public_url:
        out.append(
            "NOTIFIER_PUBLIC_URL is not set: emails carry no one-click unsubscribe (List-Unsubscribe); set it to "
            "where the kit is mounted, e.g. https://replyx.ru/api/notifier, with NOTIFIER_SECRET_KEY"
        )
    return out
