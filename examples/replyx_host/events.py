"""Dialog events across the host's processes, as ReplyX's `events_pubsub` does it: Redis pub/sub, so an
admin stream served by one uvicorn worker hears a message stored by another."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio


def channel(dialog_id: int) -> str:
    return f"replyx:dialog:{dialog_id}"


class Events:
    def __init__(self, url: str) -> None:
        self.redis = redis.asyncio.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2)

    async def publish(self, dialog_id: int, event: dict[str, Any]) -> None:
        await self.redis.publish(channel(dialog_id), json.dumps(event, ensure_ascii=False))

    @asynccontextmanager
    async def subscribe(self, dialog_id: int) -> AsyncIterator[Subscription]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel(dialog_id))
        try:
            yield Subscription(pubsub)
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()

    async def close(self) -> None:
        await self.redis.aclose()


class Subscription:
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def next(self, timeout: float) -> str | None:
        """The next event's JSON, or None when `timeout` passed without one."""
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        return None if message is None else str(message["data"])
