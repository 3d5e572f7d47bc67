"""A test server in its own process, controlled over its stdin and stdout (never over the port it serves).

The child (`python -m tests.smtpserver ...`, `python -m tests.pushservice ...`) prints ONE JSON ready line,
then answers one JSON line per command line read from stdin; EOF or `quit` stops it. Control traffic never
shares the server's port, so it never shows up in the connections and requests the server counts, and a
benchmark's load never competes with it.

    with ServiceProc("tests.pushservice", "--sink", "--delay", "0.03") as push:
        push.ready["port"], push.command("stats")

A separate process also keeps the server off the caller's GIL: a benchmark measures its client, not the
server's Python threads competing with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

Command = Callable[[list[str]], dict[str, Any]]


def say(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def serve_stdin(ready: Mapping[str, Any], commands: Mapping[str, Command]) -> None:
    """The child's side: announce `ready`, then run `name [args...]` lines until `quit` or EOF."""
    say({"ready": True, **ready})
    for line in sys.stdin:
        name, *args = line.split() or [""]
        if name == "quit":
            return
        handler = commands.get(name)
        if handler is None:
            say({"error": f"unknown command {name!r}; known: {', '.join(sorted(commands))}, quit"})
            continue
        try:
            say(handler(args))
        except Exception as exc:  # noqa: BLE001 - the caller gets the error instead of a dead pipe
            say({"error": f"{type(exc).__name__}: {exc}"})


class ServiceProc:
    """The parent's side: start `python -m <module> <args>`, wait for its ready line, send commands."""

    def __init__(self, module: str, *args: str) -> None:
        self.module = module
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, encoding="utf-8",
        )
        try:
            self.ready = self._read()
        except Exception:
            self.close()
            raise
        if not self.ready.get("ready"):
            self.close()
            raise RuntimeError(f"{module} did not start: {self.ready}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.module} exited (status {self._proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def command(self, name: str, *args: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(" ".join((name, *args)) + "\n")
        self._proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"{self.module} {name}: {answer['error']}")
        return answer

    def close(self, timeout: float = 10.0) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()  # our own child, by its handle
                self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def __enter__(self) -> ServiceProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
