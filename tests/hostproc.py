"""The example host (examples/replyx_host) as a real `uvicorn --workers N` subprocess, and an SSE reader.

    host = HostProc(tmp_path / "host", env, workers=2).start()
    ...
    host.stop()

Like tests/procs.WorkerProc: its own session (stop() reaches the supervisor and every worker), output in
a log file that failures print.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.procs import REPO, child_env, wait_until
from tests.support import free_port


class HostProc:
    def __init__(self, folder: Path, env: Mapping[str, str], workers: int = 2) -> None:
        self.folder, self.workers = folder, workers
        self.env = child_env(env)
        self.port = free_port()
        self.log_path = folder / "uvicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> HostProc:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "uvicorn", "examples.replyx_host.app:app", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", str(self.workers), "--timeout-graceful-shutdown", "1",
            "--no-access-log", "--log-level", "info",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited during startup\n{self.describe()}")
            return self.log_text().count("Application startup complete.") >= self.workers

        wait_until(ready, timeout, f"{self.workers} uvicorn workers to start", self.describe, interval=0.1)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any worker left behind
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"----- uvicorn on {self.url}, last {lines} lines of {self.log_path} -----\n{tail}"

    def client_on_another_worker(self, pid: int, attempts: int = 200) -> tuple[httpx.Client, int]:
        """An HTTP client whose keep-alive connection is served by a uvicorn worker other than `pid`: the
        kernel hands each new connection to whichever worker accepts first, so try fresh ones."""
        for _ in range(attempts):
            http = httpx.Client(base_url=self.url, timeout=10)
            answered = int(http.get("/healthz").headers["X-Worker-Pid"])
            if answered != pid:
                return http, answered
            http.close()
        raise AssertionError(f"{attempts} connections all landed on worker {pid}\n{self.describe()}")


class SseReader(threading.Thread):
    """Reads a text/event-stream in a thread: `events` gets (event name, parsed data) pairs; `close()` hangs
    up, as a browser tab does."""

    def __init__(self, url: str) -> None:
        super().__init__(name="sse-reader", daemon=True)
        self.url = url
        self.events: list[tuple[str, Any]] = []
        self.status: int | None = None
        self.error: BaseException | None = None
        self._hangup = threading.Event()

    def run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(10.0)) as http, http.stream("GET", self.url) as response:
                self.status = response.status_code
                name, data = "message", []
                for line in response.iter_lines():
                    if self._hangup.is_set():
                        return
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self.events.append((name, json.loads("\n".join(data))))
                        name, data = "message", []
        except BaseException as exc:  # noqa: BLE001 - reported to the test through `error`
            if not self._hangup.is_set():
                self.error = exc

    def wait_event(self, name: str, timeout: float = 20.0) -> Any:
        def found() -> Any:
            if self.error is not None:
                raise AssertionError(f"SSE stream failed: {self.error!r}")
            if self.status is not None and self.status != 200:
                raise AssertionError(f"SSE stream answered {self.status}")
            return next((data for event, data in self.events if event == name), None)

        return wait_until(found, timeout, f"SSE event {name!r} from {self.url}")

    def close(self) -> None:
        self._hangup.set()
        self.join(timeout=15)
        assert not self.is_alive(), "the SSE reader did not stop"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

