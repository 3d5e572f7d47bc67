"""The example host's settings, from the environment on first use."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine


@dataclass(frozen=True)
class HostConfig:
    secret: str = field(repr=False)
    database_url: str
    redis_url: str
    sse_heartbeat_seconds: float
    sse_retry_ms: int


@functools.lru_cache(maxsize=1)
def config() -> HostConfig:
    secret = os.environ.get("REPLYX_SECRET", "")
    if not secret:
        raise SystemExit("REPLYX_SECRET is not set: the example host signs its tokens with it")
    return HostConfig(
        secret=secret,
        database_url=os.environ.get("REPLYX_DATABASE_URL") or os.environ.get("NOTIFIER_DATABASE_URL") or "sqlite:///var/replyx.sqlite3",
        redis_url=os.environ.get("REPLYX_REDIS_URL") or os.environ.get("NOTIFIER_REDIS_URL") or "redis://localhost:6379/0",
        sse_heartbeat_seconds=float(os.environ.get("REPLYX_SSE_HEARTBEAT_SECONDS", "15")),
        sse_retry_ms=int(os.environ.get("REPLYX_SSE_RETRY_MS", "5000")),
    )


@functools.lru_cache(maxsize=1)
def engine() -> Engine:
    """The host's own engine (ReplyX: a plain postgresql:// URL, psycopg2)."""
    url = config().database_url
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 10})
    return create_engine(url, pool_pre_ping=True)
