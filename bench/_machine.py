"""Describe the machine a benchmark ran on, so figures can be compared across runs and hosts.

    from bench._machine import describe, format_machine
    info = describe(redis_url)          # dict, JSON-serialisable
    print(format_machine(info))
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _redis_version(redis_url: str | None) -> str | None:
    """The version the server at `redis_url` reports; else the local redis-server binary's."""
    if redis_url:
        try:
            import redis

            client: Any = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            try:
                return str(client.info("server").get("redis_version"))
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - best effort, this is a description
            pass
    binary = shutil.which("redis-server")
    if binary:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5).stdout
            for part in out.split():
                if part.startswith("v="):
                    return part[2:]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def _package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def describe(redis_url: str | None = None, packages: tuple[str, ...] = ("redis", "celery", "kombu")) -> dict[str, Any]:
    ram = _ram_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "ram_bytes": ram,
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "redis_server": _redis_version(redis_url),
        "platform": platform.platform(),
        "packages": {name: _package_version(name) for name in packages},
    }


def format_machine(info: dict[str, Any]) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in (info.get("packages") or {}).items() if v)
    lines = [
        f"CPU:      {info['cpu_model']} ({info['cpu_count']} cores, {info['usable_cores']} usable)",
        f"RAM:      {info['ram_gib']} GiB",
        f"Python:   {info['python']}",
        f"Redis:    {info['redis_server']}",
        f"Platform: {info['platform']}",
    ]
    if pkgs:
        lines.append(f"Packages: {pkgs}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_machine(describe()))
