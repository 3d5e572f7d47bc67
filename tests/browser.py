"""Headless Chromium over the DevTools protocol, for the tests that run our browser code in a real browser.

    with chromium(tmp_path / "profile") as cdp:
        tab = Tab.open(cdp, "http://127.0.0.1:8000/page")
        tab.evaluate("document.title")

One browser websocket with flat sessions (`Cdp`); every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 10.0


class CdpError(RuntimeError):
    pass


class Cdp:
    """Minimal DevTools-protocol client over one browser websocket (flat sessions); every wait has a deadline."""

    def __init__(self, url: str) -> None:
        # suppress_origin: Chromium refuses DevTools websockets that carry an Origin header it was not told to allow.
        self.ws = websocket.create_connection(url, timeout=TIMEOUT, suppress_origin=True)
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.ws.close()

    def _recv(self, deadline: float, what: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"CDP: no {what} in time")
        self.ws.settimeout(remaining)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError(f"CDP: no {what} in time") from None
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._recv(deadline, f"reply to {method}")
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, match: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT,
                   session: str | None = None) -> dict[str, Any]:
        """First event (already received or arriving within `timeout`) named `method` whose params satisfy
        `match` (and, with `session`, sent by that session)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if session is not None and event.get("sessionId") != session:
                    continue
                if event["method"] == method and match(event.get("params", {})):
                    params: dict[str, Any] = event["params"]
                    return params
            seen = len(self.events)
            message = self._recv(deadline, f"{method} event")
            if "method" in message:
                self.events.append(message)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Cdp]:
    """Headless Chromium with DevTools on a free port, its profile in `profile`; closed (then killed if
    need be) afterwards. An absent browser fails the run: nothing is skipped."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package; .ci/run does")
    log_path = profile.parent / f"{profile.name}.log"
    args = [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
    ]  # fmt: skip
    log = open(log_path, "wb")  # closed in the finally below
    # Own session: the renderer/zygote children share its process group, so one killpg reaches them all.
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    cdp: Cdp | None = None
    try:
        cdp = Cdp(_devtools_url(profile / "DevToolsActivePort", proc, log_path))
        yield cdp
        try:
            cdp.send("Browser.close")
        except (CdpError, TimeoutError, OSError, websocket.WebSocketException):
            pass  # it may drop the socket before replying; the wait/kill below settles it
    finally:
        if cdp is not None:
            cdp.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, or the browser itself if close failed
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
        log.close()


def _devtools_url(port_file: Path, proc: subprocess.Popen[bytes], log_path: Path) -> str:
    """Chromium writes "<port>\\n/devtools/browser/<id>" once DevTools listens."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chromium exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            lines = port_file.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= 2 and lines[0].strip().isdigit():
            return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        time.sleep(0.05)
    pytest.fail(f"chromium did not write {port_file} within 15 s:\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    return path.read_bytes()[-3000:].decode("utf-8", "replace")




class Tab:
    """One page (a DevTools session on a new target)."""

    def __init__(self, cdp: Cdp, session: str, target: str) -> None:
        self.cdp, self.session, self.target = cdp, session, target

    @classmethod
    def open(cls, cdp: Cdp, url: str) -> Tab:
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.send("Page.enable", session=session)
        cdp.send("Runtime.enable", session=session)
        cdp.send("Page.navigate", {"url": url}, session)
        cdp.wait_event("Page.loadEventFired", lambda p: True, session=session)
        return cls(cdp, session, target)

    def evaluate(self, expression: str) -> Any:
        result = self.cdp.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, self.session
        )
        if "exceptionDetails" in result:
            raise CdpError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT, what: str | None = None) -> Any:
        """Evaluate `expression` until it is truthy; its value, or AssertionError naming what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or expression}; last value {value!r}")
            time.sleep(0.05)

    def close(self) -> None:
        self.cdp.send("Target.closeTarget", {"targetId": self.target})
